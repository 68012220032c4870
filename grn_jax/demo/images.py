"""The demo's image files: class grids (PNG; the refinement animation: sampling/animate.py)."""

import numpy as np
from PIL import Image

from grn_jax.sampling import animate


def tile_grid(images: np.ndarray, rows: int, pad: int = 2, scale: int = 1) -> np.ndarray:
  """uint8 [rows * cols, H, W, C] (row-major) -> uint8 [rows (H s + p) + p, cols (W s + p) + p, C]."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"expected uint8 [N, H, W, C], got {images.dtype} {images.shape}.")
  if rows < 1 or len(images) % rows:
    raise ValueError(f"{len(images)} images do not fill {rows} rows.")
  images = animate.upscale(images, scale)
  cols = len(images) // rows
  h, w, c = images.shape[1:]
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i, tile in enumerate(images):
    r, col = divmod(i, cols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = tile
  return grid


def save_png(array: np.ndarray, path: str) -> None:
  array = np.asarray(array)
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
