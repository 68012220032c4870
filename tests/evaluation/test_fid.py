"""The FID command's sample readers: npz streaming."""

import numpy as np
import pytest

from grn_jax.evaluation import fid


def test_iter_npz_images_streams_batches(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)
  np.savez(tmp_path / "s.npz", images=images, labels=np.arange(7))
  np.savez_compressed(tmp_path / "adm.npz", arr_0=images)
  for name in ("s.npz", "adm.npz"):
    batches = list(fid.iter_npz_images(str(tmp_path / name), 3))
    assert [len(b) for b in batches] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(batches), images)
  assert sum(len(b) for b in fid.iter_npz_images(str(tmp_path / "s.npz"), 3, limit=4)) == 4
  np.savez(tmp_path / "bad.npz", labels=np.arange(3))
  with pytest.raises(KeyError, match="expected images"):
    list(fid.iter_npz_images(str(tmp_path / "bad.npz"), 3))
