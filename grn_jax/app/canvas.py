"""Pixels <-> latent tokens for the app: masks, uploads, paste-back and edit plans (numpy).

The tokenizer maps an H x W image to a grid of h x w latent tokens, h = H / 16, w = W / 16
(resolution.TOKENIZER_STRIDE): token (i, j) is the 16 x 16 pixel patch of rows 16 i .. 16 i + 15
and columns 16 j .. 16 j + 15, and carries the D HBQ labels of its latent vector. A mask drawn on
an image (shown `scale` times larger, or an upload of any size) selects every token whose patch
holds a painted pixel: those tokens are sampled anew, every other token keeps its labels exactly.

Decoding is not local: the decoder's convolutions and its attention block see every token, so
the decoded pixels of a kept token can change when a neighbour changes. What an edit keeps
exactly is the labels of the kept tokens; `paste_kept` (the app's "keep the original pixels"
option) also puts the source pixels of the kept tokens' patches back, so that they are
bit-identical to the image before the edit.

An edit is an `EditPlan`: the canvas labels after the edit (the canvas may grow), the tokens to
regenerate, and the window of the model's grid that the sampler sees. A class-to-image model is
trained at one grid size, so outpainting there is *shift and extend*: the window moves `shift`
tokens past the canvas border, the labels it still covers stay fixed, the `shift` new rows or
columns are sampled with them as context, and the canvas grows by them (a strip that can be
extended again and again). The tokenizer decodes the whole grown canvas at once.
"""

import dataclasses

import numpy as np
from PIL import Image

from grn_jax.resolution import TOKENIZER_STRIDE
from grn_jax.sampling.animate import upscale

DIRECTIONS = ("right", "left", "down", "up")
PAINTED_ALPHA = 128  # a mask pixel counts as painted from this brush opacity (of 255) on


def crop_box(height: int, width: int, grid: tuple[int, int]) -> tuple[int, int, int, int]:
  """(y0, x0, crop_h, crop_w): the centred crop of a height x width image to the grid's aspect."""
  grid_h, grid_w = grid
  if height * grid_w > width * grid_h:   # too tall: crop rows
    crop_h, crop_w = max(1, round(width * grid_h / grid_w)), width
  else:
    crop_h, crop_w = height, max(1, round(height * grid_w / grid_h))
  return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def to_rgb(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W], [H, W, 3] or [H, W, 4] (alpha composited over white) -> uint8 [H, W, 3]."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise TypeError(f"images must be uint8, got {image.dtype}.")
  if image.ndim == 2:
    return np.repeat(image[..., None], 3, axis=-1)
  if image.ndim != 3 or image.shape[-1] not in (3, 4):
    raise ValueError(f"an image must be [H, W], [H, W, 3] or [H, W, 4], got {image.shape}.")
  if image.shape[-1] == 3:
    return image
  alpha = image[..., 3:].astype(np.float32) / 255.0
  rgb = image[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
  return np.round(rgb).astype(np.uint8)


def fit_image(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """An upload at the model's resolution: uint8 [16 h, 16 w, 3], centre-cropped to the grid's
  aspect, then resized (Lanczos; unchanged when it already has that size)."""
  rgb = to_rgb(image)
  size = (grid[0] * TOKENIZER_STRIDE, grid[1] * TOKENIZER_STRIDE)
  if rgb.shape[:2] == size:
    return rgb
  y0, x0, crop_h, crop_w = crop_box(rgb.shape[0], rgb.shape[1], grid)
  crop = np.ascontiguousarray(rgb[y0:y0 + crop_h, x0:x0 + crop_w])
  return np.asarray(Image.fromarray(crop).resize((size[1], size[0]), Image.LANCZOS))


def painted(layers: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
  """bool [H, W]: the pixels any brush layer (RGBA uint8 [H, W, 4]) painted."""
  mask = np.zeros(shape, bool)
  for layer in layers:
    layer = np.asarray(layer)
    if layer.shape != tuple(shape) + (4,):
      raise ValueError(f"a mask layer must be RGBA [{shape[0]}, {shape[1]}, 4] like the image, "
                       f"got {layer.shape}.")
    mask |= layer[..., 3] >= PAINTED_ALPHA
  return mask


def token_mask(pixel_mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
  """bool [h, w]: the tokens whose patch holds a painted pixel of pixel_mask bool [H', W'].

  pixel_mask covers the image as shown or uploaded (any size): the patches are those of
  `fit_image`'s centred crop, so a mask drawn on an upload selects the tokens of what the model
  sees; painted pixels outside the crop select nothing.
  """
  pixel_mask = np.asarray(pixel_mask, bool)
  y0, x0, crop_h, crop_w = crop_box(pixel_mask.shape[0], pixel_mask.shape[1], grid)
  rows = y0 + np.round(np.arange(grid[0] + 1) * crop_h / grid[0]).astype(int)
  cols = x0 + np.round(np.arange(grid[1] + 1) * crop_w / grid[1]).astype(int)
  out = np.zeros(grid, bool)
  for i in range(grid[0]):
    for j in range(grid[1]):
      out[i, j] = pixel_mask[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].any()
  return out


def patch_mask(tokens: np.ndarray) -> np.ndarray:
  """bool [h, w] per token -> bool [16 h, 16 w] per pixel."""
  return upscale(np.asarray(tokens, bool)[..., None], TOKENIZER_STRIDE)[..., 0]


def paste_kept(decoded: np.ndarray, source: np.ndarray, regenerate: np.ndarray) -> np.ndarray:
  """uint8 [..., 16 h, 16 w, 3]: the decoded pixels on regenerated tokens, `source`'s elsewhere."""
  return np.where(patch_mask(regenerate)[..., None], decoded, source).astype(np.uint8)


def token_overlay(pixels: np.ndarray, regenerate: np.ndarray, scale: int) -> np.ndarray:
  """uint8 [s H, s W, 3]: the image with regenerated tokens tinted magenta and token borders."""
  tinted = pixels.astype(np.float32)
  magenta = np.array([255.0, 0.0, 255.0])
  tinted = np.where(patch_mask(regenerate)[..., None], 0.5 * tinted + 0.5 * magenta, tinted)
  out = upscale(np.round(tinted).astype(np.uint8), scale).copy()
  step = TOKENIZER_STRIDE * scale
  out[::step, :] = out[:, ::step] = (255, 255, 0)
  out[-1, :] = out[:, -1] = (255, 255, 0)
  return out


@dataclasses.dataclass(frozen=True)
class EditPlan:
  """What an edit samples. Canvas [hc, wc] tokens; the model's grid [gh, gw].

  Attributes:
    labels: int32 [hc, wc, D], the canvas after the edit's growth (new tokens hold 0).
    pixels: uint8 [16 hc, 16 wc, 3], the source pixels on the same canvas (new tokens: 0).
    regenerate: bool [hc, wc], the tokens sampled anew (all inside the window).
    window: (y0, x0), the top-left token of the [gh, gw] window the sampler sees.
  """
  labels: np.ndarray
  pixels: np.ndarray
  regenerate: np.ndarray
  window: tuple[int, int]

  def window_slices(self, grid: tuple[int, int]) -> tuple[slice, slice]:
    y0, x0 = self.window
    return slice(y0, y0 + grid[0]), slice(x0, x0 + grid[1])


def _check_canvas(labels: np.ndarray, pixels: np.ndarray, grid: tuple[int, int]) -> None:
  if labels.ndim != 3 or pixels.shape != (labels.shape[0] * TOKENIZER_STRIDE,
                                          labels.shape[1] * TOKENIZER_STRIDE, 3):
    raise ValueError(f"a canvas is labels [hc, wc, D] and pixels [16 hc, 16 wc, 3], got "
                     f"{labels.shape} and {pixels.shape}.")
  if labels.shape[0] < grid[0] or labels.shape[1] < grid[1]:
    raise ValueError(f"the canvas {labels.shape[:2]} is smaller than the model's grid {grid}.")


def inpaint_plan(labels: np.ndarray, pixels: np.ndarray, regenerate: np.ndarray,
                 grid: tuple[int, int]) -> EditPlan:
  """Regenerate the masked tokens of a canvas; the window covers them (centred, clamped).

  Raises:
    ValueError: an empty mask, or one whose tokens span more than the model's grid.
  """
  _check_canvas(labels, pixels, grid)
  regenerate = np.asarray(regenerate, bool)
  if regenerate.shape != labels.shape[:2]:
    raise ValueError(f"the token mask {regenerate.shape} does not match the canvas "
                     f"{labels.shape[:2]}.")
  if not regenerate.any():
    raise ValueError("the mask is empty: paint over the part of the image to regenerate.")
  origin = []
  for axis, size in enumerate(grid):
    used = np.flatnonzero(regenerate.any(axis=1 - axis))
    first, last = int(used[0]), int(used[-1])
    if last - first + 1 > size:
      raise ValueError(f"the mask spans {last - first + 1} tokens along "
                       f"{('rows', 'columns')[axis]}, more than the model's grid of {size}: "
                       "paint a smaller region.")
    start = (first + last + 1 - size) // 2
    origin.append(int(np.clip(start, 0, labels.shape[axis] - size)))
  return EditPlan(np.asarray(labels, np.int32), np.asarray(pixels, np.uint8), regenerate,
                  (origin[0], origin[1]))


def outpaint_plan(labels: np.ndarray, pixels: np.ndarray, direction: str, shift: int,
                  grid: tuple[int, int]) -> EditPlan:
  """Shift and extend: `shift` new token rows / columns past the canvas border in `direction`.

  The canvas must be one grid high to extend right / left, one grid wide to extend down / up
  (a strip); 1 <= shift < the grid along that axis, so the window keeps some context.
  """
  _check_canvas(labels, pixels, grid)
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
  axis = 1 if direction in ("right", "left") else 0
  if labels.shape[1 - axis] != grid[1 - axis]:
    raise ValueError(f"this canvas {labels.shape[:2]} was extended along the other axis: "
                     f"extend it {'down or up' if axis else 'right or left'}, or start from a "
                     f"{grid[0]} x {grid[1]}-token image.")
  if not 1 <= shift < grid[axis]:
    raise ValueError(f"shift must be 1 .. {grid[axis] - 1} tokens (the model's grid is "
                     f"{grid[axis]} along this axis), got {shift}.")
  pad = [(0, 0), (0, 0), (0, 0)]
  pad[axis] = (0, shift) if direction in ("right", "down") else (shift, 0)
  grown = np.pad(np.asarray(labels, np.int32), pad)
  stride = TOKENIZER_STRIDE
  grown_pixels = np.pad(np.asarray(pixels, np.uint8),
                        [(a * stride, b * stride) for a, b in pad[:2]] + [(0, 0)])
  regenerate = np.pad(np.zeros(labels.shape[:2], bool), pad[:2], constant_values=True)
  origin = [0, 0]
  if direction in ("right", "down"):
    origin[axis] = grown.shape[axis] - grid[axis]
  return EditPlan(grown, grown_pixels, regenerate, (origin[0], origin[1]))
