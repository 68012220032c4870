"""The demo's digits classifier and Fréchet distance."""

import numpy as np
import pytest

from grn_jax import tokenizer_io
from grn_jax.demo import digits
from grn_jax.demo import evaluate


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
