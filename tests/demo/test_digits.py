"""The demo data set: scikit-learn's digits, upsampled."""

import numpy as np
import pytest

from grn_jax import tokenizer_io
from grn_jax.demo import digits


def test_digits_are_the_sklearn_set_upsampled():
  gray, classes = digits.load_digits_gray(32)
  assert gray.shape == (1797, 32, 32) and gray.dtype == np.float32
  assert classes.dtype == np.int32 and np.bincount(classes).min() >= 174
  assert gray.min() >= 0.0 and gray.max() <= 1.0
  # Area-averaging back to 8x8 recovers the original 0..16 values closely.
  from sklearn import datasets
  original = datasets.load_digits().images / 16.0
  back = gray.reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
  assert np.abs(back - original).mean() < 0.05
  x = digits.gray_to_model(gray[:2])
  assert x.shape == (2, 32, 32, 3) and x.min() >= -1.0 and x.max() <= 1.0
  np.testing.assert_allclose(digits.uint8_to_gray(np.asarray(tokenizer_io.to_uint8(x))),
                             np.round(gray[:2] * 255) / 255, atol=1e-6)
  with pytest.raises(ValueError, match="multiple of 8"):
    digits.load_digits_gray(30)
