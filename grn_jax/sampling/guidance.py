"""Classifier-free guidance rules of the official samplers (GRN-SPEC §F.1, §F.2).

t is the keep ratio fed to the model at the step (its scale value), w the guidance scale.

  rule 'interval' (official C2I):
    interval (low >= 0):  scale_t = w if t < high and (low == 0 or t > low) else 1
                          logits = uncond + scale_t * (cond - uncond)
    power-cos (low < 0):  g = (1 - cos(pi * t^(-low))) / 2
                          logits = cond + w * g * (cond - uncond)      (base: the *conditional*)
  rule 'threshold' (official T2I/T2V `cfg_interval_x`, x = low; high is not used):
                          logits = uncond + w * (cond - uncond) if t >= low and w != 1 else cond

All of w, low, high and t are traced: changing them never recompiles; the rule is static.
"""

import jax.numpy as jnp

RULES = ("interval", "threshold")


def _check_rule(rule: str) -> None:
  if rule not in RULES:
    raise ValueError(f"guidance rule must be one of {RULES}, got {rule!r}.")


def _power_cos_weight(t, low):
  return 0.5 * (1.0 - jnp.cos(jnp.pi * jnp.power(jnp.maximum(t, 0.0), -low)))


def active(t, scale, low, high, rule: str = "interval"):
  """bool [B]: whether guidance changes the logits at keep ratio t [B]."""
  _check_rule(rule)
  if rule == "threshold":
    return (t >= low) & (scale != 1.0)
  in_interval = (t < high) & ((low == 0) | (t > low))
  return jnp.where(low < 0, (scale * _power_cos_weight(t, low)) != 0,
                   in_interval & (scale != 1.0))


def combine(cond, uncond, t, scale, low, high, rule: str = "interval"):
  """Guided logits. cond, uncond [B, ...]; t [B]; scale, low, high scalars."""
  _check_rule(rule)
  t = t.reshape((-1,) + (1,) * (cond.ndim - 1))
  if rule == "threshold":
    guided = uncond + scale * (cond - uncond)
    return jnp.where((t >= low) & (scale != 1.0), guided, cond)
  in_interval = (t < high) & ((low == 0) | (t > low))
  interval = uncond + jnp.where(in_interval, scale, 1.0) * (cond - uncond)
  power_cos = cond + scale * _power_cos_weight(t, low) * (cond - uncond)
  return jnp.where(low < 0, power_cos, interval)
