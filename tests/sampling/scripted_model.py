"""Scripted stand-ins for a GRN network, for sampler tests (labels of any rank)."""

import jax
import jax.numpy as jnp
import numpy as np


class ScriptedModel:
  """A fake network: logits favour label (cond + position) % K with a per-cond sharpness.

  `cond` is an int per row [B] (a class, say); the labels [B, *grid, D] have any rank.
  """

  def __init__(self, shape, values, sharpness):
    self.shape, self.values = tuple(shape), values
    self.sharpness = jnp.asarray(sharpness, jnp.float32)

  def target(self, cond):
    """int [B, *shape]: the label each position is pushed to."""
    pos = jnp.arange(int(np.prod(self.shape))).reshape(self.shape)
    return (jnp.asarray(cond).reshape((-1,) + (1,) * len(self.shape)) + pos) % self.values

  def __call__(self, params, labels, t, cond):
    del params, t
    assert labels.shape[1:] == self.shape, (labels.shape, self.shape)
    onehot = jax.nn.one_hot(self.target(cond), self.values)
    sharp = self.sharpness[jnp.minimum(cond, len(self.sharpness) - 1)]
    return onehot * sharp.reshape((-1,) + (1,) * (onehot.ndim - 1))

  def __hash__(self):
    return id(self)


def mixing_logits(xp, labels, t, cond, values):
  """Logits that depend on the input labels, the keep ratio and a float conditioning [B].

  xp is numpy or jax.numpy (the same arithmetic in both, float32): label k's logit is
  2 [input == k - 1 mod K] + t k / 2 + cond (2 k / (K - 1) - 1).
  """
  shape = (-1,) + (1,) * labels.ndim
  ks = xp.arange(values, dtype=xp.float32)
  rolled = (labels[..., None] == (ks.astype(xp.int32) - 1) % values).astype(xp.float32)
  slope = xp.asarray(2.0 * ks / (values - 1) - 1.0, xp.float32)
  t = xp.asarray(t, xp.float32).reshape(shape)
  cond = xp.asarray(cond, xp.float32).reshape(shape)
  return xp.asarray(2.0 * rolled + t * ks * 0.5 + cond * slope, xp.float32)


class MixingModel:
  """apply_fn of `mixing_logits` (cond float32 [B], labels int32 [B, *grid, D])."""

  def __init__(self, values):
    self.values = values

  def __call__(self, params, labels, t, cond):
    del params
    return mixing_logits(jnp, labels, t, cond, self.values)

  def __hash__(self):
    return id(self)
