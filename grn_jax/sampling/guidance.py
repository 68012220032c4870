"""Classifier-free guidance rules of the official C2I sampler (GRN-SPEC §F.1).

  interval (low >= 0):  scale_t = w if t < high and (low == 0 or t > low) else 1
                        logits = uncond + scale_t * (cond - uncond)
  power-cos (low < 0):  g = (1 - cos(pi * t^(-low))) / 2
                        logits = cond + w * g * (cond - uncond)      (base: the *conditional*)

All of w, low, high and t are traced: changing them never recompiles.
"""

import jax.numpy as jnp


def interval_active(t, scale, low, high):
  """bool [B]: whether guidance changes the logits at keep ratio t [B]."""
  in_interval = (t < high) & ((low == 0) | (t > low))
  power_cos = low < 0
  g = 0.5 * (1.0 - jnp.cos(jnp.pi * jnp.power(jnp.maximum(t, 0.0), -low)))
  return jnp.where(power_cos, (scale * g) != 0, in_interval & (scale != 1.0))


def combine(cond, uncond, t, scale, low, high):
  """Guided logits. cond, uncond [B, ...]; t [B]; scale, low, high scalars."""
  t = t.reshape((-1,) + (1,) * (cond.ndim - 1))
  in_interval = (t < high) & ((low == 0) | (t > low))
  interval = uncond + jnp.where(in_interval, scale, 1.0) * (cond - uncond)
  g = 0.5 * (1.0 - jnp.cos(jnp.pi * jnp.power(jnp.maximum(t, 0.0), -low)))
  power_cos = cond + scale * g * (cond - uncond)
  return jnp.where(low < 0, power_cos, interval)
