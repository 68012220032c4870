"""A scripted stand-in for the GRN network, for sampler tests."""

import jax
import jax.numpy as jnp


class ScriptedModel:
  """A fake network: logits favour label (class + position) % K with a per-class sharpness."""

  def __init__(self, shape, classes, sharpness):
    self.shape, self.classes = shape, classes
    self.sharpness = jnp.asarray(sharpness, jnp.float32)
    self.calls = 0

  def __call__(self, params, labels, t, class_labels):
    del params, t
    h, w, d = self.shape
    pos = jnp.arange(h * w * d).reshape(h, w, d)
    target = (class_labels[:, None, None, None] + pos) % self.classes
    onehot = jax.nn.one_hot(target, self.classes)
    sharp = self.sharpness[jnp.minimum(class_labels, len(self.sharpness) - 1)]
    return onehot * sharp[:, None, None, None, None]

  def __hash__(self):
    return id(self)
