"""Editing through fixed labels: image-to-video, video continuation, inpainting, outpainting.

The refinement loop holds `fixed_labels` where `fixed_mask` is set (every step's input and
prediction; refine.py) and refines the rest. Each function here builds that pair (int32 / bool,
the labels' shape) for one kind of edit; they are family-free: images are [B, h, w, D] (C2I) or
[B, 1, h, w, D] (T2I), videos [B, T, h, w, D].

  image_to_video(image_labels, frames)        frame 0 fixed (the image), frames 1.. free
  continue_video(video_labels, frames, keep)  the first `keep` latent frames fixed
  inpaint(labels, region)                     labels outside the region fixed, inside free
  outpaint(labels, grid, offset)              the labels placed at `offset` of a larger (or
                                              shifted) grid, the uncovered border free
  latent_region(pixel_mask, stride)           a pixel mask -> the latent tokens it touches

Why image-to-video works this way: the video tokenizer is causal in time, so latent frame 0 of a
video is the encoding of its first frame alone (tests/sampling/test_editing.py checks that the
labels are equal). The released T2V model was not trained with fixed frames (README): it sees
them only as kept labels, and its scale token counts them as kept.
"""

import numpy as np

from grn_jax import resolution


def _labels(labels) -> np.ndarray:
  labels = np.asarray(labels)
  if not np.issubdtype(labels.dtype, np.integer):
    raise TypeError(f"HBQ labels must be integers, got {labels.dtype}.")
  return labels.astype(np.int32)


def image_to_video(image_labels, frames: int) -> tuple[np.ndarray, np.ndarray]:
  """Image labels [B, h, w, D] (or [B, 1, h, w, D]) -> a video of `frames` latent frames whose
  frame 0 is fixed to them: (fixed_labels, fixed_mask) [B, frames, h, w, D]."""
  image = _labels(image_labels)
  if image.ndim == 5:
    if image.shape[1] != 1:
      raise ValueError(f"image labels must have one latent frame, got {image.shape}.")
    image = image[:, 0]
  if image.ndim != 4:
    raise ValueError(f"image labels must be [B, h, w, D], got {image.shape}.")
  return continue_video(image[:, None], frames, 1)


def continue_video(video_labels, frames: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
  """Video labels [B, T0, h, w, D] -> `frames` latent frames, the first `keep` (<= T0) fixed to
  the given ones: (fixed_labels, fixed_mask) [B, frames, h, w, D]."""
  video = _labels(video_labels)
  if video.ndim != 5:
    raise ValueError(f"video labels must be [B, T, h, w, D], got {video.shape}.")
  if not 0 < keep <= min(video.shape[1], frames):
    raise ValueError(f"keep={keep} latent frames must be in [1, min({video.shape[1]} given, "
                     f"{frames} wanted)].")
  shape = (video.shape[0], frames) + video.shape[2:]
  fixed, mask = np.zeros(shape, np.int32), np.zeros(shape, bool)
  fixed[:, :keep] = video[:, :keep]
  mask[:, :keep] = True
  return fixed, mask


def inpaint(labels, region) -> tuple[np.ndarray, np.ndarray]:
  """Regenerate `region` (bool [h, w] or [B, h, w]: True = refine) and keep every other label:
  (fixed_labels, fixed_mask) of labels' shape ([B, h, w, D] or [B, T, h, w, D])."""
  labels = _labels(labels)
  region = np.asarray(region, bool)
  grid = labels.shape[-3:-1]
  if region.shape[-2:] != grid or region.ndim not in (2, 3):
    raise ValueError(f"region must be bool [h, w] or [B, h, w] of the latent grid {grid}, got "
                     f"{region.shape}; map a pixel mask with latent_region().")
  region = np.broadcast_to(region, (labels.shape[0],) + grid)
  if labels.ndim == 5:
    region = region[:, None]
  mask = np.broadcast_to(~region[..., None], labels.shape).copy()
  return labels, mask


def outpaint(labels, grid: tuple[int, int], offset: tuple[int, int]
             ) -> tuple[np.ndarray, np.ndarray]:
  """Labels [B, h0, w0, D] (or [B, T, h0, w0, D]) placed with their top-left token at `offset`
  (y, x; may be negative) of a grid (h, w); what they cover is fixed, the rest (the border, or
  what a shift uncovers) is free: (fixed_labels, fixed_mask) [B, (T,) h, w, D].

  A C2I model samples one grid size: there, outpainting shifts the image within its grid
  (grid = the same size, offset = the shift) and extends it on the uncovered side.
  """
  labels = _labels(labels)
  height, width = grid
  oy, ox = offset
  h0, w0 = labels.shape[-3:-1]
  shape = labels.shape[:-3] + (height, width, labels.shape[-1])
  fixed, mask = np.zeros(shape, np.int32), np.zeros(shape, bool)
  y0, y1 = max(oy, 0), min(oy + h0, height)
  x0, x1 = max(ox, 0), min(ox + w0, width)
  if y0 >= y1 or x0 >= x1:
    raise ValueError(f"labels of {h0}x{w0} tokens at offset {offset} do not overlap the "
                     f"{height}x{width} grid.")
  fixed[..., y0:y1, x0:x1, :] = labels[..., y0 - oy:y1 - oy, x0 - ox:x1 - ox, :]
  mask[..., y0:y1, x0:x1, :] = True
  return fixed, mask


def latent_region(pixel_mask, stride: int = resolution.TOKENIZER_STRIDE) -> np.ndarray:
  """bool [..., H, W] pixels (True = regenerate) -> bool [..., H / stride, W / stride]: a latent
  token is regenerated when any pixel of its stride x stride patch is (a token's labels describe
  its whole patch, so a partly masked patch cannot be kept)."""
  pixel_mask = np.asarray(pixel_mask, bool)
  height, width = pixel_mask.shape[-2:]
  if height % stride or width % stride:
    raise ValueError(f"a pixel mask of {height}x{width} is not a multiple of the tokenizer "
                     f"stride {stride}.")
  blocks = pixel_mask.reshape(pixel_mask.shape[:-2] + (height // stride, stride,
                                                       width // stride, stride))
  return blocks.any(axis=(-3, -1))
