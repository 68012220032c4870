"""Dynamic-resolution helpers against hand-computed values (GRN-SPEC §G.3, §G.4, §L.6)."""

import math

import numpy as np
import pytest

from grn_jax import resolution


def test_templates_are_truncated_to_three_decimals():
  assert len(resolution.TEMPLATES) == 15
  assert resolution.TEMPLATES[resolution.ASPECT_RATIOS.index(9 / 16)] == 0.562
  assert resolution.TEMPLATES[resolution.ASPECT_RATIOS.index(100 / 116)] == 0.862
  assert resolution.TEMPLATES[resolution.ASPECT_RATIOS.index(16 / 9)] == 1.777


@pytest.mark.parametrize("h_div_w,template", [(1.0, 1.0), (9 / 16, 0.562), (0.55, 0.562),
                                              (1.1, 1.16), (1.05, 1.0), (7.0, 3.0),
                                              (0.1, 0.333), (480 / 848, 0.562)])
def test_nearest_template(h_div_w, template):
  assert resolution.nearest_template(h_div_w) == template


@pytest.mark.parametrize("h_div_w,pixels,grid", [
    (1.0, "1M", (64, 64)),        # 1024 x 1024
    (9 / 16, "1M", (48, 85)),     # pw = round(64 / 0.75 = 85.33), ph = round(85.33 * 0.5625 = 48)
    (9 / 16, "0.41M", (30, 53)),  # 480 x 848: pw = round(40 / 0.75 = 53.33), ph = 30
    (16 / 9, "0.41M", (53, 30)),
    (1.0, "0.06M", (16, 16)),
    (3.0, "1M", (111, 37)),       # pw = 64 / sqrt(3) = 36.95 -> 37, ph = 110.85 -> 111
])
def test_latent_grid(h_div_w, pixels, grid):
  assert resolution.latent_grid(h_div_w, pixels) == grid
  assert resolution.image_size(h_div_w, pixels) == (16 * grid[0], 16 * grid[1])


def test_frames():
  assert resolution.num_frames(0) == 1
  assert resolution.num_frames(2.0) == 33
  assert resolution.num_frames(10.0) == 81  # capped at the pipeline's 81 frames
  assert resolution.latent_frames(1) == 1
  assert resolution.latent_frames(33) == 9
  assert resolution.latent_frames(81) == 21


def test_rope_grid():
  # r = 1: int(sqrt(225 * 75)) = int(129.9) = 129 on both sides.
  assert resolution.rope_grid(1.0) == (129, 129)
  # r = 0.562: upw = sqrt(16875 / 0.562) = 173.28, uph = 0.562 * 173.28 = 97.38.
  assert resolution.rope_grid(0.562) == (97, 173)
  assert resolution.rope_grid(3.0) == (225, 75)
  w = math.sqrt(225 * 75 / 0.75)
  assert resolution.rope_grid(0.75) == (int(0.75 * w), int(w))


def test_rope_spatial_indices_round_half_even_in_float32():
  idx = resolution.rope_spatial_indices(64, 129)
  assert idx[1] == 2 and idx[31] == 62  # 2.0156 -> 2; 62.48 -> 62
  assert idx[32] == 64                   # 64.5 -> 64 (half to even), not 65
  assert idx[63] == 127                  # 126.98
  # 75 * 129 / 90 = 107.5 exactly, but the float32 product (as torch computes it) is 107.49999:
  # float64 arithmetic would give 108.
  assert resolution.rope_spatial_indices(90, 129)[75] == 107
  assert np.round(75 * (129 / 90)) == 108
  with pytest.raises(ValueError, match="RoPE grid"):
    resolution.rope_spatial_indices(130, 129)


def test_bad_values_raise():
  with pytest.raises(ValueError, match="pixels"):
    resolution.latent_grid(1.0, "3M")
  with pytest.raises(ValueError, match="h_div_w"):
    resolution.nearest_template(0.0)
  with pytest.raises(ValueError, match="duration"):
    resolution.num_frames(-1)
