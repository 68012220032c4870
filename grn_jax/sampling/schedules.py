"""Keep-ratio schedules t(u) for refinement sampling (GRN-SPEC §F.1-F.4).

A schedule maps refinement progress u in [0, 1] to the keep ratio t in [0, 1] (t(0) = 0,
t(1) = 1): the probability that a label keeps the model's prediction rather than its original
random value after a step.

  * linear  (official C2I):          t = u
  * cosine  (official T2I/T2V HEAD):  t = 1 - cos(pi/2 * shift(u))
  * shifted (initial T2I/T2V code):   t = shift(u)

with shift(u) = 1 - a (1 - u) / (1 + (a - 1)(1 - u)) the SD3-style shift towards more noise for
a > 1 (official `shift_pt`; a = 1 is the identity).

Progress for step i with a budget of `total` steps, after `warmup` steps on the base grid of
`base` steps (entropy-guided sampling stretches the rest of the schedule to the budget):
  u_i = i / base                                       for i <= warmup
  u_i = warmup / base + (1 - warmup / base) (i - warmup) / (total - warmup)   otherwise.
With total == base this is i / base, the official fixed grid.
"""

import jax.numpy as jnp

SCHEDULES = ("linear", "cosine", "shifted")


def shift_keep_ratio(u, shift):
  """Official `shift_pt`: more noise for shift > 1; identity for shift == 1."""
  noise = 1.0 - u
  return 1.0 - shift * noise / (1.0 + (shift - 1.0) * noise)


def keep_ratio(u, kind: str, shift=1.0):
  """t(u) for a schedule `kind` (static) and a traced `shift`."""
  u = jnp.clip(jnp.asarray(u, jnp.float32), 0.0, 1.0)
  if kind == "linear":
    return u
  if kind == "cosine":
    return 1.0 - jnp.cos(0.5 * jnp.pi * shift_keep_ratio(u, shift))
  if kind == "shifted":
    return shift_keep_ratio(u, shift)
  raise ValueError(f"unknown schedule {kind!r}; choose from {SCHEDULES}.")


def progress(step, total, base: int, warmup: int):
  """u for integer `step` (array) of a row with budget `total` (array of total steps)."""
  step = jnp.asarray(step, jnp.float32)
  total = jnp.asarray(total, jnp.float32)
  u_warm = step / base
  rest = jnp.maximum(total - warmup, 1.0)
  u_rest = warmup / base + (1.0 - warmup / base) * (step - warmup) / rest
  u = jnp.where(step <= warmup, u_warm, u_rest)
  return jnp.where(step >= total, 1.0, jnp.clip(u, 0.0, 1.0))
