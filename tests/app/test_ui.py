"""The page's callbacks without a browser: uploads, result clicks, extend, errors; the CLI."""

import os
import subprocess
import sys

import numpy as np
import pytest

gr = pytest.importorskip("gradio", reason="pip install -r requirements-test.txt (gradio)")

# pylint: disable=g-import-not-at-top,wrong-import-position
from grn_jax.app import canvas
from grn_jax.app import ui
from tests.app import tiny
# pylint: enable=g-import-not-at-top,wrong-import-position

SETTINGS = dict(condition=2, steps=3, cfg_scale=1.0, temperature=1.0, adaptive=False, seed=1,
                animate_on=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
  return ui.App(tiny.tiny_engine(num_samples=2), out_dir=str(tmp_path_factory.mktemp("app")))


def _editor(background, painted_box=None):
  layer = np.zeros(background.shape[:2] + (4,), np.uint8)
  if painted_box is not None:
    (y0, y1), (x0, x1) = painted_box
    layer[y0:y1, x0:x1] = 255
  return dict(background=background, layers=[layer], composite=background)


class _Click:
  def __init__(self, index):
    self.index = index


def test_generate_fills_an_empty_editor_and_a_click_loads_a_result(page):
  gallery, info, movie, npz, results, editor, state = page.generate(
      **SETTINGS, editor=None, state=None)
  assert page.scale == 8 and len(gallery) == 2 and movie is None and os.path.exists(npz)
  assert gallery[0][0].shape == (256, 256, 3) and gallery[1][1] == "#1: 3 steps"
  assert info.startswith("generated 2 samples of class 2, seed 1") and "steps per sample: 3, 3" in info
  np.testing.assert_array_equal(editor["background"], canvas.upscale(results[0]["pixels"], 8))
  np.testing.assert_array_equal(state["labels"], results[0]["labels"])
  # A full editor is left alone.
  *_, editor_again, state_again = page.generate(**SETTINGS, editor=editor, state=state)
  assert state_again is state and editor_again == gr.update()
  editor, chosen, _ = page.select(results, _Click(1))
  np.testing.assert_array_equal(chosen["labels"], results[1]["labels"])
  np.testing.assert_array_equal(editor["background"], canvas.upscale(results[1]["pixels"], 8))


def test_an_upload_is_fitted_encoded_and_masked_in_its_own_pixels(page):
  upload = np.zeros((120, 100, 3), np.uint8)                 # crop: rows 10 .. 109
  upload[10:110, 50:] = 200
  editor = _editor(upload, painted_box=((70, 80), (60, 70)))  # crop (60, 60): token (1, 1)
  outputs = page.inpaint(editor, None, **SETTINGS, keep_pixels=True)
  info, results, token_map, state = outputs[1], outputs[4], outputs[5], outputs[6]
  assert info.startswith("regenerated 1 of 4 tokens: (1, 1)")
  assert "an uploaded 120 x 100 image, centre-cropped and resized to 32 x 32" in info
  fitted = canvas.fit_image(upload, (2, 2))
  np.testing.assert_array_equal(state["pixels"], fitted)
  np.testing.assert_array_equal(state["labels"], page.engine.encode(fitted))
  outside = canvas.patch_mask(np.array([[True, True], [True, False]]))
  assert all((r["pixels"][outside] == fitted[outside]).all() for r in results)
  assert token_map.shape == (256, 256, 3)


def test_extend_and_errors(page):
  *_, results, editor, state = page.generate(**SETTINGS, editor=None, state=None)
  outputs = page.extend(editor, state, "down", 1, **SETTINGS, keep_pixels=False)
  assert outputs[1].startswith("extended down by 1 token(s): the canvas is now 3 x 2 tokens")
  assert outputs[4][0]["labels"].shape == (3, 2, 4) and outputs[0][0][0].shape == (384, 256, 3)
  with pytest.raises(gr.Error, match="mask is empty"):
    page.inpaint(editor, state, **SETTINGS, keep_pixels=True)
  with pytest.raises(gr.Error, match="editor is empty"):
    page.inpaint(None, None, **SETTINGS, keep_pixels=True)
  with pytest.raises(gr.Error, match="temperature must be > 0"):
    page.generate(**dict(SETTINGS, temperature=0.0), editor=None, state=None)
  assert results


def test_the_command_line_says_where_to_get_a_model(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = subprocess.run([sys.executable, "-m", "grn_jax.app", f"--workdir={tmp_path}"],
                       capture_output=True, text=True, timeout=300, env=env,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert run.returncode == 1, run.stderr
  assert f"No model in {tmp_path}" in run.stderr and "hf://bytedance-research/GRN" in run.stderr
