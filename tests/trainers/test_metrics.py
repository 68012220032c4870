"""The shared metrics of the GRN tasks: per-element cross-entropy and accuracy per keep decile."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.trainers import metrics


def test_bins_and_cross_entropy_values():
  np.testing.assert_array_equal(
      metrics.keep_ratio_bins(jnp.array([0.0, 0.099, 0.1, 0.55, 0.999, 1.0])),
      [0, 0, 1, 5, 9, 9])
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  np.testing.assert_allclose(metrics.cross_entropy(logits, jnp.array([1])), [math.log(4)],
                             rtol=1e-6)


def test_keep_ratio_accuracy_metric_sums_and_names():
  first = metrics.KeepRatioAccuracy.from_model_output(
      per_example_accuracy=jnp.array([1.0, 0.5, 0.25]), keep_ratio=jnp.array([0.05, 0.07, 0.95]))
  second = metrics.KeepRatioAccuracy.from_model_output(
      per_example_accuracy=jnp.array([0.0]), keep_ratio=jnp.array([0.91]))
  merged = metrics.KeepRatioAccuracy.empty().merge(first).merge(second)
  assert merged.compute() == pytest.approx({"accuracy/keep_0.0_0.1": 0.75,
                                            "accuracy/keep_0.9_1.0": 0.125})


def test_keep_ratio_accuracy_skips_examples_of_weight_zero():
  # Packed rows [2, 2]: the second slot of row 0 is empty (weight 0).
  got = metrics.KeepRatioAccuracy.from_model_output(
      per_example_accuracy=jnp.array([[1.0, 0.3], [0.5, 0.0]]),
      keep_ratio=jnp.array([[0.05, 0.02], [0.95, 0.91]]),
      example_weight=jnp.array([[1.0, 0.0], [1.0, 1.0]]))
  assert got.compute() == pytest.approx({"accuracy/keep_0.0_0.1": 1.0,
                                         "accuracy/keep_0.9_1.0": 0.25})
