"""The demo's image files: class grids."""

import numpy as np
import pytest

from grn_jax.demo import images as image_files


def test_tile_grid_places_tiles_row_major():
  tiles = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(6)])
  grid = image_files.tile_grid(tiles, rows=2, pad=1)
  assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
  assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 1 and grid[4, 1, 0] == 3 and grid[4, 9, 0] == 5
  assert grid[0, 0, 0] == 255
  with pytest.raises(ValueError, match="rows"):
    image_files.tile_grid(tiles, rows=4)
