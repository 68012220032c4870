"""Executes notebooks/grn_colab.ipynb headless on its fallback path (no hub, test-size demo)."""

import os
import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_notebook_runs_on_the_demo_fallback(tmp_path, monkeypatch):
  monkeypatch.setenv("GRN_COLAB_OFFLINE", "1")
  monkeypatch.setenv("GRN_COLAB_WORKDIR", str(tmp_path))
  monkeypatch.setenv("GRN_COLAB_DEMO_CONFIG", "size=test")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "")   # one CPU device, as in Colab
  monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(ROOT / "notebooks" / "grn_colab.ipynb", as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": str(ROOT)}})
  client.execute()
  text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.get("outputs", []))
  assert "FALLING BACK to the embedded digits demo" in text
  assert "checkpoint source: demo" in text
  for name in ("grid_demo.png", "refinement.gif", "refinement.png", "fixed_vs_adaptive.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  images = [out for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})
            or "image/gif" in out.get("data", {})]
  assert len(images) >= 4
