"""Image files of the demo: class grids (PNG) and refinement animations (GIF + PNG strip)."""

import numpy as np
from PIL import Image


def _upscale(tile: np.ndarray, scale: int) -> np.ndarray:
  return np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)


def tile_grid(images: np.ndarray, rows: int, pad: int = 2, scale: int = 1) -> np.ndarray:
  """uint8 [rows * cols, H, W, C] (row-major) -> uint8 [rows (H s + p) + p, cols (W s + p) + p, C]."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"expected uint8 [N, H, W, C], got {images.dtype} {images.shape}.")
  if rows < 1 or len(images) % rows:
    raise ValueError(f"{len(images)} images do not fill {rows} rows.")
  cols = len(images) // rows
  h, w, c = images.shape[1] * scale, images.shape[2] * scale, images.shape[3]
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i, tile in enumerate(images):
    r, col = divmod(i, cols)
    y, x = pad + r * (h + pad), pad + col * (w + pad)
    grid[y:y + h, x:x + w] = _upscale(tile, scale)
  return grid


def save_png(array: np.ndarray, path: str) -> None:
  array = np.asarray(array)
  Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)


def save_animation(frames: np.ndarray, gif_path: str, strip_path: str, frame_ms: int = 120,
                   scale: int = 2, strip_frames: int = 8) -> None:
  """Refinement frames uint8 [T, N, H, W, C] -> a GIF (each frame a row of N images) and a PNG
  strip (rows = `strip_frames` evenly spaced steps including the last)."""
  frames = np.asarray(frames)
  if frames.ndim != 5 or frames.dtype != np.uint8:
    raise ValueError(f"expected uint8 frames [T, N, H, W, C], got {frames.dtype} {frames.shape}.")
  steps = len(frames)
  rows = [tile_grid(f, 1, scale=scale) for f in frames]
  pil = [Image.fromarray(r[..., 0] if r.shape[-1] == 1 else r) for r in rows]
  # Hold the final frame a little longer so the result is readable before the loop restarts.
  durations = [frame_ms] * (steps - 1) + [frame_ms * 8]
  pil[0].save(gif_path, save_all=True, append_images=pil[1:], duration=durations, loop=0)
  picks = np.unique(np.linspace(0, steps - 1, min(strip_frames, steps)).round().astype(int))
  save_png(tile_grid(frames[picks].reshape(-1, *frames.shape[2:]), len(picks), scale=scale),
           strip_path)
