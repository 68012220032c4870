"""The digits demo: data, evaluation, image files, the tokenizer trainer and the whole pipeline
at test size (configs/demo.py:size=test, a few steps per stage)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_configs
from grn_jax.demo import digits
from grn_jax.demo import evaluate
from grn_jax.demo import images as image_files
from grn_jax.trainers import tokenizer as tokenizer_trainer


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
  np.testing.assert_allclose(digits.uint8_to_gray(digits.model_to_uint8(x)),
                             np.round(gray[:2] * 255) / 255, atol=1e-6)
  with pytest.raises(ValueError, match="multiple of 8"):
    digits.load_digits_gray(30)


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
  real = digits.model_to_uint8(digits.gray_to_model(classifier.real_images[test]))
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


def test_tile_grid_places_tiles_row_major():
  tiles = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(6)])
  grid = image_files.tile_grid(tiles, rows=2, pad=1)
  assert grid.shape == (2 * 3 + 1, 3 * 4 + 1, 1)
  assert grid[1, 1, 0] == 0 and grid[1, 5, 0] == 1 and grid[4, 1, 0] == 3 and grid[4, 9, 0] == 5
  assert grid[0, 0, 0] == 255
  with pytest.raises(ValueError, match="rows"):
    image_files.tile_grid(tiles, rows=4)


def test_hbq_straight_through_quantises_forward_and_passes_gradients():
  x = jnp.asarray([-0.99, -0.3, 0.01, 0.5, 0.97])
  y = tokenizer_trainer.hbq_straight_through(x, 4)  # 16 bin centres -1 + (2l + 1) / 16
  np.testing.assert_allclose(y, [-0.9375, -0.3125, 0.0625, 0.4375, 0.9375], atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(tokenizer_trainer.hbq_straight_through(v, 4) * 3.0))(x)
  np.testing.assert_allclose(grad, 3.0)


def test_tokenizer_train_config_is_validated():
  config = demo_configs.get_config("size=test")
  config.tokenizer_train.quantize_prob = 1.5
  with pytest.raises(ValueError, match="quantize_prob"):
    tokenizer_trainer.validate_train_config(config.tokenizer_train, 100)
  config.tokenizer_train.quantize_prob = 0.5
  with pytest.raises(ValueError, match="batch_size"):
    tokenizer_trainer.validate_train_config(config.tokenizer_train, 4)


def test_demo_config_is_consistent_and_rejects_unknown_arguments():
  config = demo_configs.get_config()
  assert config.mode == "demo" and config.data.source == "arrays"
  assert config.data.image_size == 16 * config.model.input_size
  assert config.tokenizer.latent_dim == config.model.latent_dim
  with pytest.raises(ValueError, match="size"):
    demo_configs.get_config("size=huge")
  with pytest.raises(ValueError, match="unknown config arguments"):
    demo_configs.get_config("variant=B")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  from grn_jax.demo import run as demo_run_module
  workdir = str(tmp_path_factory.mktemp("demo"))
  config = demo_configs.get_config("size=test")
  config.mesh.update(data=1)     # one of the 8 fake CPU devices
  config.demo.evaluate = True
  summary = demo_run_module.run_demo(config, workdir)
  return config, workdir, summary


def test_demo_writes_samples_grid_and_animation(demo_run):
  config, workdir, summary = demo_run
  per_class = config.sample.per_class
  with np.load(os.path.join(workdir, "samples.npz")) as data:
    images, labels = data["images"], data["labels"]
  size = config.data.image_size
  assert images.dtype == np.uint8 and images.shape == (10 * per_class, size, size, 3)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), per_class))
  with np.load(os.path.join(workdir, "samples_adaptive.npz")) as data:
    assert data["images"].shape == images.shape
  from PIL import Image
  grid = Image.open(os.path.join(workdir, "grid.png"))
  cols = config.demo.grid_per_class
  assert grid.size == (cols * (2 * size + 2) + 2, 10 * (2 * size + 2) + 2)
  gif = Image.open(os.path.join(workdir, "refinement.gif"))
  assert gif.n_frames == config.sample.num_steps + 1
  for name in ("tokenizer", "grn_params", "checkpoints", "digits_labels.npz",
               "evaluation.json", "summary.json", "refinement.png"):
    assert os.path.exists(os.path.join(workdir, name)), name
  assert set(summary["evaluation"]) == {"reconstructions", "fixed", "adaptive"}
  assert 0.0 <= summary["evaluation"]["fixed"]["accuracy"] <= 1.0
  import json
  from grn_jax.demo import run as demo_run_module
  with open(os.path.join(workdir, "evaluation.json")) as f:
    saved = json.load(f)
  for name in ("reconstructions", "fixed", "adaptive"):
    assert saved[name]["within_class_diversity"] >= 0.0
    assert 1.0 < saved[name]["real_within_class_diversity"] < 8.0
  text = demo_run_module.format_summary(summary)
  assert text.count("within-class diversity") == 4   # 3 sample sets + the real digits
  assert "stage timings:" in text and "grn " in text


def test_demo_resumes_from_its_workdir(demo_run):
  from grn_jax.demo import run as demo_run_module
  config, workdir, summary = demo_run
  with np.load(os.path.join(workdir, "digits_labels.npz")) as data:
    labels = data["labels"]
  again = demo_run_module.run_demo(config, workdir)
  with np.load(os.path.join(workdir, "digits_labels.npz")) as data:
    np.testing.assert_array_equal(data["labels"], labels)   # same tokenizer, not retrained
  assert again["tokenizer_metrics"] is None
  assert again["reconstruction_psnr_db"] == pytest.approx(summary["reconstruction_psnr_db"])
