"""The demo's digits classifier and Fréchet distance."""

import numpy as np
import pytest

from grn_jax import tokenizer_io
from grn_jax.demo import digits
from grn_jax.demo import evaluate


def test_to_source_size_averages_blocks():
  big = np.arange(2 * 16 * 16, dtype=np.float64).reshape(2, 16, 16)
  small = evaluate.to_source_size(big)
  assert small.shape == (2, 8, 8)
  # Block (0, 0) of image 0 holds 0, 1, 16, 17; block (7, 7) of image 1 holds 256 + 238, 239, 254, 255.
  assert small[0, 0, 0] == pytest.approx(8.5)
  assert small[1, 7, 7] == pytest.approx(256 + 246.5)
  eight = np.random.default_rng(0).random((3, 8, 8))
  np.testing.assert_array_equal(evaluate.to_source_size(eight), eight)
  with pytest.raises(ValueError, match="multiples of 8"):
    evaluate.to_source_size(np.zeros((1, 12, 12)))


def test_within_class_diversity_known_values():
  zeros, ones, halves = np.zeros((8, 8)), np.ones((8, 8)), np.full((8, 8), 0.5)
  # Identical images: 0.
  assert evaluate.within_class_diversity(np.stack([halves] * 4), np.zeros(4, int)) == 0.0
  # All 64 pixels differ by 1: ||a - b|| = sqrt(64) = 8; by 0.5: 4.
  assert evaluate.within_class_diversity(np.stack([zeros, ones]), [3, 3]) == pytest.approx(8.0)
  # Class 0: pairs (0, 1) 8, (0, 1/2) 4, (1, 1/2) 4 -> 16 / 3; class 1: identical -> 0;
  # class 2 has one image (no pair, left out). Mean over classes 0 and 1: 8 / 3.
  images = np.stack([zeros, ones, halves, ones, ones, zeros])
  labels = np.array([0, 0, 0, 1, 1, 2])
  assert evaluate.within_class_diversity(images, labels) == pytest.approx(8.0 / 3.0)
  # One pixel differs by 0.75: 0.75. At 32x32 the pixel is a 4x4 block: the same value.
  one_pixel = zeros.copy()
  one_pixel[2, 5] = 0.75
  assert evaluate.within_class_diversity(np.stack([zeros, one_pixel]), [1, 1]) == pytest.approx(0.75)
  big = np.repeat(np.repeat(np.stack([zeros, one_pixel]), 4, axis=1), 4, axis=2)
  assert evaluate.within_class_diversity(big, [1, 1]) == pytest.approx(0.75)
  with pytest.raises(ValueError, match="at least 2 images"):
    evaluate.within_class_diversity(np.stack([zeros, ones]), [0, 1])
  with pytest.raises(ValueError, match="labels must be"):
    evaluate.within_class_diversity(np.stack([zeros, ones]), [0, 0, 0])


def test_classifier_accepts_real_digits_and_rejects_noise(tmp_path):
  classifier = evaluate.DigitsClassifier(16)
  assert classifier.real_test_accuracy > 0.93
  test = classifier.test_index
  real = np.asarray(tokenizer_io.to_uint8(digits.gray_to_model(classifier.real_images[test])))
  result = evaluate.evaluate_samples(real, classifier.real_labels[test], classifier)
  assert result["accuracy"] == pytest.approx(classifier.real_test_accuracy)
  assert result["frechet_distance"] == pytest.approx(result["real_floor"], rel=1e-2)  # uint8 rounding
  assert result["within_class_diversity"] == pytest.approx(result["real_within_class_diversity"],
                                                           rel=1e-3)
  assert 1.0 < result["real_within_class_diversity"] < 8.0
  # One image per class repeated: no diversity at all.
  labels = classifier.real_labels[test]
  first = np.array([np.flatnonzero(labels == c)[0] for c in labels])
  copies = evaluate.evaluate_samples(real[first], labels, classifier)
  assert copies["within_class_diversity"] == 0.0
  assert copies["real_within_class_diversity"] == result["real_within_class_diversity"]
  noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
  bad = evaluate.evaluate_samples(noise, classifier.real_labels[test], classifier)
  assert bad["accuracy"] < 0.3 and bad["frechet_distance"] > 20 * result["frechet_distance"]
  path = tmp_path / "s.npz"
  np.savez(path, images=real.astype(np.float32), labels=classifier.real_labels[test])
  with pytest.raises(ValueError, match="uint8"):
    evaluate.load_samples(str(path))
