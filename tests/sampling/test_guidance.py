"""Classifier-free guidance: interval, power-cos and threshold forms against numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.sampling import guidance


def test_guidance_matches_numpy_reference():
  rng = np.random.default_rng(0)
  cond, uncond = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
  t = np.array([0.3, 0.6])
  out = guidance.combine(jnp.asarray(cond), jnp.asarray(uncond), jnp.asarray(t), 2.35, 0.44, 1.0)
  scale = np.where((t < 1.0) & (t > 0.44), 2.35, 1.0)[:, None, None]
  np.testing.assert_allclose(out, uncond + scale * (cond - uncond), rtol=1e-5)
  # power-cos (low < 0): base is the conditional logits.
  out = guidance.combine(jnp.asarray(cond), jnp.asarray(uncond), jnp.asarray(t), 3.0, -2.0, 1.0)
  g = ((1 - np.cos(np.pi * t**2)) / 2)[:, None, None]
  np.testing.assert_allclose(out, cond + 3.0 * g * (cond - uncond), rtol=1e-5)
  active = guidance.active(jnp.array([0.0, 0.3, 0.5, 1.0]), 2.0, 0.44, 1.0)
  np.testing.assert_array_equal(active, [False, False, True, False])
  np.testing.assert_array_equal(guidance.active(jnp.array([.5]), 1.0, 0.0, 1.0), [False])


def test_threshold_rule_of_the_official_t2iv_loop():
  # scale w while t >= x, else exactly the conditional logits (no uncond + 1 * (c - u) rounding).
  rng = np.random.default_rng(1)
  cond = rng.normal(size=(3, 5)).astype(np.float32)
  uncond = rng.normal(size=(3, 5)).astype(np.float32)
  t = jnp.array([0.0, 0.25, 0.9])
  out = np.asarray(guidance.combine(jnp.asarray(cond), jnp.asarray(uncond), t, 4.0, 0.25, 0.5,
                                    rule="threshold"))
  np.testing.assert_array_equal(out[0], cond[0])
  np.testing.assert_allclose(out[1:], uncond[1:] + 4.0 * (cond[1:] - uncond[1:]), rtol=1e-6)
  np.testing.assert_array_equal(guidance.active(t, 4.0, 0.25, 0.5, rule="threshold"),
                                [False, True, True])
  np.testing.assert_array_equal(guidance.active(t, 1.0, 0.0, 1.0, rule="threshold"),
                                [False, False, False])
  with pytest.raises(ValueError, match="rule"):
    guidance.active(t, 2.0, 0.0, 1.0, rule="always")
