"""The demo's digits classifier and Fréchet distance."""

import numpy as np
import pytest

from grn_jax import tokenizer_io
from grn_jax.demo import digits
from grn_jax.demo import evaluate


def test_frechet_distance_known_values():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((4000, 3))
  assert evaluate.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-3)
  # Same covariance, mean shifted by (1, 2, 2): distance = |shift|^2 = 9.
  assert evaluate.frechet_distance(a, a + [1.0, 2.0, 2.0]) == pytest.approx(9.0, rel=1e-3)
  # N(0, I) vs N(0, 4 I) in 3-d: 3 * (1 + 4 - 2 * 2) = 3.
  b = rng.standard_normal((200_000, 3)) * 2.0
  c = rng.standard_normal((200_000, 3))
  assert evaluate.frechet_distance(c, b) == pytest.approx(3.0, rel=0.03)


def test_classifier_accepts_real_digits_and_rejects_noise(tmp_path):
  classifier = evaluate.DigitsClassifier(16)
  assert classifier.real_test_accuracy > 0.93
  test = classifier.test_index
  real = np.asarray(tokenizer_io.to_uint8(digits.gray_to_model(classifier.real_images[test])))
  result = evaluate.evaluate_samples(real, classifier.real_labels[test], classifier)
  assert result["accuracy"] == pytest.approx(classifier.real_test_accuracy)
  assert result["frechet_distance"] == pytest.approx(result["real_floor"], rel=1e-2)  # uint8 rounding
  noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
  bad = evaluate.evaluate_samples(noise, classifier.real_labels[test], classifier)
  assert bad["accuracy"] < 0.3 and bad["frechet_distance"] > 20 * result["frechet_distance"]
  path = tmp_path / "s.npz"
  np.savez(path, images=real.astype(np.float32), labels=classifier.real_labels[test])
  with pytest.raises(ValueError, match="uint8"):
    evaluate.load_samples(str(path))
