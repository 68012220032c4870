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

`Schedule` is the static structure the sampler compiles: the kind, where u reaches 1 (at each
row's budget as above, or on a fixed grid of `grid_steps` intervals, independent of the budget:
the official T2I/T2V `u_i = min(1, i / (Tmax - 1))`), a cap on t (official T2I/T2V: 0.999) and
whether the last step keeps every prediction (official C2I: t_next = 1 at the last step).

Exact tables for replays. The official code computes its schedule in float64 (numpy) and compares
float32 keep uniforms with it, i.e. with the float64 value rounded to float32. `host_table` does
that on the host for a known shift; `Schedule.exact_table` does it inside a jitted program for a
*traced* shift, in double-float arithmetic (pairs of float32 with ~48 significant bits, error-free
sums and products; float64 is not available on every accelerator), so that a replayed official
trajectory keeps exactly the same labels while the shift stays a traced setting.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULES = ("linear", "cosine", "shifted")
# Official T2I/T2V HEAD: next_pt = 0.999 * (1 - cos(pi/2 * shift_pt(min(1, (i+1)/(Tmax-1))))).
OFFICIAL_T2IV_MAX_KEEP = 0.999


def shift_keep_ratio(u, shift):
  """Official `shift_pt`: more noise for shift > 1; identity for shift == 1.

  1 - a (1 - u) / (1 + (a - 1)(1 - u)) written as u / (1 + (a - 1)(1 - u)): the same value
  without the cancellation of 1 - (1 - u) in float32 at small u.
  """
  return u / (1.0 + (shift - 1.0) * (1.0 - u))


def keep_ratio(u, kind: str, shift=1.0):
  """t(u) for a schedule `kind` (static) and a traced `shift`."""
  u = jnp.clip(jnp.asarray(u, jnp.float32), 0.0, 1.0)
  if kind == "linear":
    return u
  if kind == "cosine":
    # 1 - cos(x) as 2 sin^2(x / 2): no cancellation in float32 at small x (the first steps).
    return 2.0 * jnp.square(jnp.sin(0.25 * jnp.pi * shift_keep_ratio(u, shift)))
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


@dataclasses.dataclass(frozen=True)
class Schedule:
  """The static structure of a keep-ratio schedule (one compiled program per schedule).

  Attributes:
    kind: 'linear' | 'cosine' | 'shifted', t = max_keep * kind(u) (the shift is traced).
    grid_steps: 0: u reaches 1 at each row's budget (`progress`: the C2I grid, stretched after
      the warm-up for entropy-guided budgets); G > 0: u_i = min(1, i / G) whatever the budget
      (the official T2I/T2V grid, G = Tmax - 1).
    max_keep: the cap of t (official T2I/T2V: 0.999, so no step keeps every prediction).
    final_keep_all: the last step of a row keeps every prediction (t_next = 1), as in the
      official C2I loop. Either way the sampler's output is the last step's prediction.
  """
  kind: str = "linear"
  grid_steps: int = 0
  max_keep: float = 1.0
  final_keep_all: bool = True

  def __post_init__(self):
    if self.kind not in SCHEDULES:
      raise ValueError(f"sample.schedule must be one of {SCHEDULES}, got {self.kind!r}.")
    if self.grid_steps < 0:
      raise ValueError(f"schedule grid_steps must be >= 0, got {self.grid_steps}.")
    if not 0.0 < self.max_keep <= 1.0:
      raise ValueError(f"schedule max_keep must be in (0, 1], got {self.max_keep}.")

  def keep_ratio_at(self, step, total, base: int, warmup: int, shift) -> jnp.ndarray:
    """t after `step` completed steps (int array) of rows with budgets `total` [B]: float32 [B]."""
    if self.grid_steps:
      u = jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / self.grid_steps)
      u = jnp.broadcast_to(u, jnp.shape(total))
    else:
      u = progress(step, total, base, warmup)
    return self.max_keep * keep_ratio(u, self.kind, shift)

  def host_table(self, num_steps: int, shift: float) -> np.ndarray:
    """t_next of steps 0 .. num_steps - 1 of a fixed budget, in float64 rounded once to float32.

    For a sampler whose keep uniforms are compared with a reference computed in float64 (the
    official code computes its schedule in numpy): pass it as SamplerSettings.keep_table. The
    last step's t_next = 1 of `final_keep_all` is applied by the sampler, not stored here.
    """
    u = np.arange(1, num_steps + 1, dtype=np.float64)
    if self.grid_steps:
      u = np.minimum(1.0, u / self.grid_steps)
    else:
      u = np.minimum(1.0, u / num_steps)
    noise = 1.0 - u
    shifted = 1.0 - shift * noise / (1.0 + (shift - 1.0) * noise)
    t = {"linear": u, "cosine": 1.0 - np.cos(0.5 * np.pi * shifted), "shifted": shifted}
    return (self.max_keep * t[self.kind]).astype(np.float32)

  def exact_table(self, num_steps: int, shift) -> jnp.ndarray:
    """`host_table(num_steps, shift)` for a traced float32 `shift`, in-graph: float32 [num_steps].

    The float64 formula rounded once to float32, computed in double-float arithmetic (see the
    module docstring); it differs from the host table only where the float64 value lies within
    about 1e-14 of a float32 rounding boundary. Fixed budgets only, like host_table.
    """
    u = np.arange(1, num_steps + 1, dtype=np.float64)
    u = np.minimum(1.0, u / (self.grid_steps or num_steps))
    shift = jnp.broadcast_to(jnp.asarray(shift, jnp.float32), u.shape)
    zero = jnp.zeros(u.shape, jnp.float32)
    noise = _df_const(1.0 - u)
    # shifted = 1 - a n / (1 + (a - 1) n), as the official shift_pt
    a = (shift, zero)
    denominator = _df_add(_df_const(np.ones_like(u)),
                          _df_mul(_df_add(a, _df_const(-np.ones_like(u))), noise))
    shifted = _df_add(_df_const(np.ones_like(u)),
                      _df_neg(_df_div(_df_mul(a, noise), denominator)))
    if self.kind == "linear":
      t = _df_const(u)
    elif self.kind == "shifted":
      t = shifted
    else:
      t = _df_one_minus_cos(_df_mul(_df_const(np.full_like(u, 0.5 * np.pi)), shifted))
    t = _df_mul(_df_const(np.full_like(u, self.max_keep)), t)
    return t[0] + t[1]


# --- double-float arithmetic: a value is a pair (hi, lo) of float32 arrays, hi + lo exactly. ---


def _df_const(x: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  hi = np.float32(x)
  return jnp.float32(hi), jnp.float32(np.float32(x - np.float64(hi)))


def _rounded(x):
  """An optimisation barrier on a rounded sum: XLA's algebraic simplifier would otherwise
  rewrite s - (s - a) to a and the error terms would vanish."""
  return jax.lax.optimization_barrier(x)


def _two_sum(a, b):
  s = _rounded(a + b)
  bb = _rounded(s - a)
  return s, (a - (s - bb)) + (b - bb)


def _quick_two_sum(a, b):
  s = _rounded(a + b)
  return s, b - (s - a)


def _split(a):
  """a = hi + lo with 12-bit significands (a bit mask, exact)."""
  hi = jax.lax.bitcast_convert_type(
      jax.lax.bitcast_convert_type(a, jnp.uint32) & jnp.uint32(0xFFFFF000), jnp.float32)
  return hi, a - hi


def _two_prod(a, b):
  """a * b as a double-float from its four partial products, each exact in float32.

  Not Dekker's `(ah bh - p) + ...`: XLA:CPU contracts that into a fused multiply-add of the
  unrounded product and the error term vanishes. Sums of exact products come out the same
  whether or not the compiler fuses them.
  """
  ah, al = _split(a)
  bh, bl = _split(b)
  s, e1 = _two_sum(ah * bh, ah * bl)
  s, e2 = _two_sum(s, al * bh)
  s, e3 = _two_sum(s, al * bl)
  return _quick_two_sum(s, e1 + e2 + e3)


def _df_add(x, y):
  s, e = _two_sum(x[0], y[0])
  return _quick_two_sum(s, e + (x[1] + y[1]))


def _df_mul(x, y):
  p, e = _two_prod(x[0], y[0])
  return _quick_two_sum(p, e + (x[0] * y[1] + x[1] * y[0]))


def _df_neg(x):
  return -x[0], -x[1]


def _df_div(x, y):
  q1 = x[0] / y[0]
  r = _df_add(x, _df_neg(_df_mul((q1, jnp.zeros_like(q1)), y)))
  q2 = r[0] / y[0]
  r = _df_add(r, _df_neg(_df_mul((q2, jnp.zeros_like(q2)), y)))
  q3 = r[0] / y[0]
  return _df_add(_quick_two_sum(q1, q2), (q3, jnp.zeros_like(q3)))


def _df_one_minus_cos(x):
  """1 - cos(x) for x in [0, pi/2]: its Taylor series (13 terms: < 1e-19 at pi/2) by Horner."""
  y = _df_mul(x, x)
  acc = _df_const((-1.0) ** 14 / math.factorial(26))
  for k in range(12, 0, -1):
    acc = _df_add(_df_const((-1.0) ** (k + 1) / math.factorial(2 * k)), _df_mul(y, acc))
  return _df_mul(y, acc)


def official_t2iv(schedule_steps: int) -> Schedule:
  """The official T2I/T2V HEAD schedule for `complexity_aware_Tmax` = schedule_steps."""
  if schedule_steps < 2:
    raise ValueError(f"schedule_steps (official Tmax) must be >= 2, got {schedule_steps}.")
  return Schedule(kind="cosine", grid_steps=schedule_steps - 1,
                  max_keep=OFFICIAL_T2IV_MAX_KEEP, final_keep_all=False)
