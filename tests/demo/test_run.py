"""The whole digits demo at test size (configs/demo.py:size=test, a few steps per stage)."""

import json
import os

import numpy as np
import pytest

from grn_jax.demo import run as demo_run_module


pytestmark = pytest.mark.xdist_group("c2i_demo")   # shares conftest.c2i_demo_run


@pytest.fixture
def demo_run(c2i_demo_run):
  return c2i_demo_run


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
  with open(os.path.join(workdir, "evaluation.json")) as f:
    saved = json.load(f)
  for name in ("reconstructions", "fixed", "adaptive"):
    assert saved[name]["within_class_diversity"] >= 0.0
    assert 1.0 < saved[name]["real_within_class_diversity"] < 8.0
  # FID during training: the loop's evaluation at the last step sampled the same images as the
  # fixed-step samples (same params, indices and seed), its in-program classifier features give
  # the offline evaluation's Frechet distance and accuracy.
  curve = summary["online_evaluation"]
  assert [e["step"] for e in curve] == [config.train.total_steps]
  assert curve[0]["eval/num_samples"] == 10 * per_class
  fixed = summary["evaluation"]["fixed"]
  np.testing.assert_allclose(curve[0]["eval/frechet_distance"], fixed["frechet_distance"],
                             rtol=1e-3)
  assert curve[0]["eval/accuracy"] == fixed["accuracy"]
  for name in ("digits_classifier.npz", "digits_reference.npz"):
    assert os.path.exists(os.path.join(workdir, "eval", name)), name
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  text = demo_run_module.format_summary(summary)
  assert text.count("within-class diversity") == 4   # 3 sample sets + the real digits
  assert "stage timings:" in text and "grn " in text
  assert "during training (step: Frechet distance of 20 samples): 3: " in text


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
