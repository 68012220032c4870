"""Reference statistics files: missing-file hints, ADM batches, our own stats."""

import numpy as np
import pytest

from grn_jax.evaluation import reference


def test_reference_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="openaipublic.*VIRTUAL_imagenet256_labeled"):
    reference.load_reference(str(tmp_path / "VIRTUAL_imagenet256_labeled.npz"))
  with pytest.raises(FileNotFoundError, match="LTH14/JiT"):
    reference.load_reference(str(tmp_path / "jit_in256_stats.npz"))
  mu, sigma = np.arange(3.0), np.eye(3)
  np.savez(tmp_path / "adm.npz", mu=mu, sigma=sigma, arr_0=np.zeros((2, 4, 4, 3), np.uint8),
           mu_s=mu, sigma_s=sigma)
  ref = reference.load_reference(str(tmp_path / "adm.npz"), need_images=True)
  np.testing.assert_array_equal(ref["mu"], mu)
  assert ref["images"].shape == (2, 4, 4, 3)
  reference.save_stats(str(tmp_path / "own.npz"), mu, sigma)
  with pytest.raises(KeyError, match="no reference images"):
    reference.load_reference(str(tmp_path / "own.npz"), need_images=True)
  np.savez(tmp_path / "bad.npz", mean=mu)
  with pytest.raises(KeyError, match="'mu' and 'sigma'"):
    reference.load_reference(str(tmp_path / "bad.npz"))
