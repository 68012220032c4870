"""Executes notebooks/grn_colab.ipynb headless on its fallback path (no hub, test-size demo)."""

import os
import pathlib

import numpy as np
from PIL import Image
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
  for name in ("grid_demo.png", "refinement.gif", "refinement.png", "fixed_vs_adaptive.png",
               "t2i_grid.png", "t2i_fixed_vs_adaptive.png", "t2v/000000.gif", "t2v/000000.mp4"):
    assert (tmp_path / name).stat().st_size > 0, name
  # The text-to-image / text-to-video section, on the tiny random-weight fallback.
  assert "FALLING BACK to a tiny RANDOM-weight GRN-2B-shaped model" in text
  assert "text-to-image / text-to-video source: tiny" in text
  assert "   fixed: mean steps 4.0 per image" in text
  assert "1 video(s), 4 steps" in text
  grid = np.asarray(Image.open(tmp_path / "t2i_grid.png"))
  assert grid.shape == (256, 4 * 256, 3) and grid.std() > 0
  both = np.asarray(Image.open(tmp_path / "t2i_fixed_vs_adaptive.png"))
  np.testing.assert_array_equal(both[:256], grid)  # top: the fixed-steps grid
  images = [out for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if "image/png" in out.get("data", {})
            or "image/gif" in out.get("data", {})]
  assert len(images) >= 4
