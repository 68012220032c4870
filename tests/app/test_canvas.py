"""Pixels <-> tokens: crops, uploads, masks, paste-back, inpainting windows, shift and extend."""

import numpy as np
import pytest

from grn_jax.app import canvas

GRID = (2, 2)


def test_crop_box_keeps_the_grid_aspect_centred():
  assert canvas.crop_box(32, 32, (2, 2)) == (0, 0, 32, 32)
  assert canvas.crop_box(240, 200, (2, 2)) == (20, 0, 200, 200)   # too tall: rows cropped
  assert canvas.crop_box(100, 300, (2, 4)) == (0, 50, 100, 200)   # too wide: columns cropped


def test_to_rgb_and_fit_image():
  rgba = np.zeros((4, 4, 4), np.uint8)
  rgba[..., 0], rgba[..., 3] = 200, 255
  rgba[0, 0, 3] = 0                                       # transparent: white
  rgb = canvas.to_rgb(rgba)
  assert rgb[1, 1].tolist() == [200, 0, 0] and rgb[0, 0].tolist() == [255, 255, 255]
  assert canvas.to_rgb(np.full((2, 2), 7, np.uint8)).shape == (2, 2, 3)
  with pytest.raises(TypeError, match="uint8"):
    canvas.to_rgb(np.zeros((4, 4, 3), np.float32))
  exact = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
  assert canvas.fit_image(exact, GRID) is exact           # the model's size: unchanged
  # A 240 x 200 upload: the centred 200 x 200 crop, resized to 32 x 32. A flat crop with a
  # different border shows the crop: the border never reaches the result.
  upload = np.zeros((240, 200, 3), np.uint8)
  upload[20:220] = 90
  fitted = canvas.fit_image(upload, GRID)
  assert fitted.shape == (32, 32, 3) and (fitted == 90).all()


def test_token_mask_maps_painted_pixels_to_patches():
  shown = np.zeros((256, 256), bool)                      # 32 x 32 shown 8x: 128 px a token
  shown[10:20, 130:140] = True                            # inside token (0, 1)
  np.testing.assert_array_equal(canvas.token_mask(shown, GRID), [[False, True], [False, False]])
  shown[127, 127] = True                                  # the last pixel of token (0, 0)
  np.testing.assert_array_equal(canvas.token_mask(shown, GRID), [[True, True], [False, False]])
  # An upload of 240 x 200: the crop is rows 20 .. 219; painting outside it selects nothing.
  upload = np.zeros((240, 200), bool)
  upload[:20] = True
  assert not canvas.token_mask(upload, GRID).any()
  upload[120, 150] = True                                 # crop row 100 = token row 1, col 1
  np.testing.assert_array_equal(canvas.token_mask(upload, GRID), [[False, False], [False, True]])


def test_painted_thresholds_the_brush_alpha():
  layer = np.zeros((8, 8, 4), np.uint8)
  layer[0, 0, 3], layer[1, 1, 3] = canvas.PAINTED_ALPHA, canvas.PAINTED_ALPHA - 1
  mask = canvas.painted([layer], (8, 8))
  assert mask[0, 0] and not mask[1, 1] and mask.sum() == 1
  assert not canvas.painted([], (8, 8)).any()
  with pytest.raises(ValueError, match="RGBA"):
    canvas.painted([layer[..., :3]], (8, 8))


def test_paste_kept_and_overlay():
  decoded = np.full((2, 32, 32, 3), 200, np.uint8)
  source = np.full((32, 32, 3), 10, np.uint8)
  regenerate = np.array([[True, False], [False, False]])
  out = canvas.paste_kept(decoded, source, regenerate)
  assert (out[:, :16, :16] == 200).all() and (out[:, 16:] == 10).all()
  assert (out[:, :16, 16:] == 10).all()
  overlay = canvas.token_overlay(source, regenerate, 2)
  assert overlay.shape == (64, 64, 3)
  assert overlay[5, 5].tolist() == [132, 5, 132] and overlay[40, 40].tolist() == [10, 10, 10]
  assert overlay[32, 5].tolist() == [255, 255, 0]          # a token border


def _canvas(h, w, d=3):
  labels = np.arange(h * w * d, dtype=np.int32).reshape(h, w, d)
  return labels, np.zeros((16 * h, 16 * w, 3), np.uint8)


def test_inpaint_plan_windows_and_errors():
  labels, pixels = _canvas(2, 2)
  plan = canvas.inpaint_plan(labels, pixels, [[True, False], [False, False]], GRID)
  assert plan.window == (0, 0)
  np.testing.assert_array_equal(plan.labels, labels)
  # On a 2 x 5 strip the window centres on the mask, clamped to the canvas.
  labels, pixels = _canvas(2, 5)
  mask = np.zeros((2, 5), bool)
  mask[0, 2] = True
  assert canvas.inpaint_plan(labels, pixels, mask, GRID).window == (0, 1)
  mask[:] = False
  mask[1, 4] = True
  assert canvas.inpaint_plan(labels, pixels, mask, GRID).window == (0, 3)
  with pytest.raises(ValueError, match="empty"):
    canvas.inpaint_plan(labels, pixels, np.zeros((2, 5), bool), GRID)
  mask[0, 1] = True                                        # columns 1 .. 4: wider than 2
  with pytest.raises(ValueError, match="spans 4 tokens along columns"):
    canvas.inpaint_plan(labels, pixels, mask, GRID)
  with pytest.raises(ValueError, match="does not match the canvas"):
    canvas.inpaint_plan(labels, pixels, np.ones((2, 2), bool), GRID)
  with pytest.raises(ValueError, match="smaller than the model's grid"):
    canvas.inpaint_plan(*_canvas(1, 2), np.ones((1, 2), bool), GRID)


@pytest.mark.parametrize("direction", canvas.DIRECTIONS)
def test_outpaint_plan_shifts_and_extends(direction):
  grid = (3, 3)
  labels, pixels = _canvas(3, 3)
  pixels[:] = 50
  plan = canvas.outpaint_plan(labels, pixels, direction, 2, grid)
  axis = 1 if direction in ("right", "left") else 0
  assert plan.labels.shape[axis] == 5 and plan.labels.shape[1 - axis] == 3
  assert plan.pixels.shape[:2] == (16 * plan.labels.shape[0], 16 * plan.labels.shape[1])
  old = [slice(None), slice(None)]
  old[axis] = slice(0, 3) if direction in ("right", "down") else slice(2, 5)
  np.testing.assert_array_equal(plan.labels[tuple(old)], labels)
  assert not plan.regenerate[tuple(old)].any() and plan.regenerate.sum() == 6
  assert (plan.pixels[canvas.patch_mask(~plan.regenerate)] == 50).all()
  # The window covers the 2 new rows / columns and 1 old one (context).
  rows, cols = plan.window_slices(grid)
  window = plan.regenerate[rows, cols]
  assert window.shape == grid and window.sum() == 6


def test_outpaint_plan_errors():
  labels, pixels = _canvas(2, 3)                           # a strip, extended to the right
  with pytest.raises(ValueError, match="extend it right or left"):
    canvas.outpaint_plan(labels, pixels, "down", 1, GRID)
  with pytest.raises(ValueError, match="shift must be 1 .. 1"):
    canvas.outpaint_plan(labels, pixels, "right", 2, GRID)
  with pytest.raises(ValueError, match="direction must be one of"):
    canvas.outpaint_plan(labels, pixels, "sideways", 1, GRID)
  with pytest.raises(ValueError, match="a canvas is labels"):
    canvas.outpaint_plan(labels, pixels[:16], "right", 1, GRID)
