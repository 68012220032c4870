"""Dynamic resolution of the T2I/T2V family (GRN-SPEC §G.3, §G.4; official
`grn/schedules/dynamic_resolution.py`, `grn_pipeline.py`, `global_refine.get_visual_rope_embeds`).

An aspect ratio h / w is snapped to the nearest of 15 templates; a pixel-count bucket ('1M', ...)
and the template give the latent grid (ph, pw) (tokenizer stride 16); a duration gives the frame
count and the latent frames (temporal stride 4, first frame alone). The template also fixes the
resolution-normalised RoPE grid (uph, upw) that the transformer's spatial positions index into.
"""

import math

import numpy as np

# Aspect templates h / w (official `train_h_div_w_list` default), exact values.
ASPECT_RATIOS = (3 / 1, 5 / 2, 2 / 1, 16 / 9, 3 / 2, 4 / 3, 116 / 100, 1.0, 100 / 116, 3 / 4,
                 2 / 3, 9 / 16, 1 / 2, 2 / 5, 1 / 3)
# The pipeline keys (and the RoPE grid) use the ratio truncated to 3 decimals: 9/16 -> 0.562.
TEMPLATES = tuple(int(r * 1000) / 1000 for r in ASPECT_RATIOS)
# Pixel-count bucket -> latent side of the square grid (tokenizer stride 16): '1M' -> 64 x 64.
PIXEL_BUCKETS = {"0.06M": 16, "0.25M": 32, "0.41M": 40, "0.92M": 60, "1M": 64, "2M": 90}
TOKENIZER_STRIDE = 16
TEMPORAL_STRIDE = 4
VIDEO_FPS = 16
MAX_VIDEO_FRAMES = 81
# RoPE: the spatial tables have 1800 // 8 = 225 positions; the most extreme template is 3.
ROPE_MAX_SIDE = 1800 // 8
ROPE_EXTREME_RATIO = 3


def nearest_template(h_div_w: float) -> float:
  """The template (truncated, as the pipeline keys it) nearest to h / w: 0.5625 -> 0.562."""
  if not h_div_w > 0:
    raise ValueError(f"h_div_w must be a positive height / width ratio, got {h_div_w!r}.")
  templates = np.asarray(TEMPLATES)
  return float(templates[np.argmin(np.abs(templates - h_div_w))])


def latent_grid(h_div_w: float, pixels: str) -> tuple[int, int]:
  """(ph, pw) latent tokens for the template nearest h_div_w and a bucket of PIXEL_BUCKETS.

  pw = round(side / sqrt(r)), ph = round(pw_float * r) with the exact template ratio r and
  numpy's half-to-even rounding: ('1M', 1) -> (64, 64), ('0.41M', 9/16) -> (30, 53).
  """
  if pixels not in PIXEL_BUCKETS:
    raise ValueError(f"pixels must be one of {list(PIXEL_BUCKETS)}, got {pixels!r}.")
  ratio = ASPECT_RATIOS[TEMPLATES.index(nearest_template(h_div_w))]
  side = PIXEL_BUCKETS[pixels]
  pw_float = math.sqrt(side * side / ratio)
  return int(np.round(pw_float * ratio)), int(np.round(pw_float))


def image_size(h_div_w: float, pixels: str) -> tuple[int, int]:
  """(height, width) in pixels: 16 * latent_grid."""
  ph, pw = latent_grid(h_div_w, pixels)
  return ph * TOKENIZER_STRIDE, pw * TOKENIZER_STRIDE


def num_frames(duration: float, fps: int = VIDEO_FPS, max_frames: int = MAX_VIDEO_FRAMES) -> int:
  """Video frames of `duration` seconds, min(max_frames, int(duration * fps + 1)); 0 s = image."""
  if duration < 0:
    raise ValueError(f"duration must be >= 0 seconds, got {duration!r}.")
  return min(max_frames, int(duration * fps + 1))


def latent_frames(frames: int) -> int:
  """Latent frames of a clip: (frames - 1) // 4 + 1 (33 frames -> 9)."""
  if frames < 1:
    raise ValueError(f"a clip has at least one frame, got {frames!r}.")
  return (frames - 1) // TEMPORAL_STRIDE + 1


def rope_grid(template: float) -> tuple[int, int]:
  """(uph, upw): the RoPE height/width index range the template's grid is spread over.

  upw = int(sqrt(225 * 75 / r)), uph = int(r * sqrt(225 * 75 / r)); r = 1 -> (129, 129).
  """
  if not 0 < template <= ROPE_EXTREME_RATIO:
    raise ValueError(f"aspect template must lie in (0, {ROPE_EXTREME_RATIO}], got {template!r}.")
  extreme_w = ROPE_MAX_SIDE / ROPE_EXTREME_RATIO
  upw = np.sqrt(ROPE_MAX_SIDE * extreme_w / template)
  return int(template * upw), int(upw)


def rope_spatial_indices(size: int, rope_size: int) -> np.ndarray:
  """int32 [size]: round-half-even(i * rope_size / size), computed in float32 as the official
  `torch.arange(size) * (rope_size / size)` (float64 would round differently at some ties)."""
  if size > rope_size:
    raise ValueError(f"a latent side of {size} tokens exceeds the RoPE grid side {rope_size} of "
                     "its aspect template; use a smaller pixel bucket or the matching template.")
  scaled = np.arange(size, dtype=np.float32) * np.float32(rope_size / size)
  return np.round(scaled).astype(np.int32)
