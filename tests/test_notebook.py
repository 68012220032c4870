"""Executes notebooks/grn_colab.ipynb headless on its fallback path (no hub, test-size demo)."""

import os
import pathlib
import shutil

import numpy as np
from PIL import Image
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.xdist_group("c2i_demo")
def test_notebook_runs_on_the_demo_fallback(tmp_path, monkeypatch, c2i_demo_run, cheap_xla_flags):
  # The notebook reuses a trained digits demo in WORK/demo (as a Colab user's second run does):
  # the test-size demo that tests/demo/test_run.py checks, so it is trained once.
  _, demo_dir, _ = c2i_demo_run
  for name in ("tokenizer", "grn_params"):
    shutil.copytree(os.path.join(demo_dir, name), tmp_path / "demo" / name)
  monkeypatch.setenv("GRN_COLAB_OFFLINE", "1")
  monkeypatch.setenv("GRN_COLAB_WORKDIR", str(tmp_path))
  monkeypatch.setenv("GRN_COLAB_DEMO_CONFIG", "size=test")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", cheap_xla_flags)   # one CPU device, as in Colab
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


def test_install_cell_clones_the_project_url_without_any_setting(tmp_path, monkeypatch):
  """The first cell installs from setup.cfg's url when grn_jax is not importable (Colab); the
  README's badge opens this notebook of that repository."""
  import configparser
  import importlib.util
  import subprocess
  cfg = configparser.ConfigParser()
  cfg.read(ROOT / "setup.cfg")
  url = cfg["metadata"]["url"]
  owner_repo = url.removeprefix("https://github.com/")
  badge = (f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/"
           "grn_colab.ipynb")
  assert badge in (ROOT / "README.md").read_text()
  assert badge in cfg["metadata"]["project_urls"]
  nb = nbformat.read(ROOT / "notebooks" / "grn_colab.ipynb", as_version=4)
  calls = []
  monkeypatch.delenv("GRN_JAX_REPO", raising=False)
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd) or (
      (tmp_path / "grn_jax").mkdir() if cmd[:2] == ["git", "clone"] else None))
  monkeypatch.chdir(tmp_path)
  monkeypatch.setattr("sys.path", list(__import__("sys").path))
  exec(nb.cells[1].source, {"__name__": "notebook"})  # pylint: disable=exec-used
  assert calls[0] == ["git", "clone", "--depth=1", url, "grn_jax"]
  assert calls[1][1:] == ["-m", "pip", "install", "-q", "-e", "grn_jax[hub,torch,demo,text,video]"]
  extras = cfg["options.extras_require"]
  assert all(name in extras for name in ("hub", "torch", "demo", "text", "video"))
