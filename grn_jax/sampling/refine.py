"""The GRN refinement sampler: one `lax.while_loop` inside one jit, decode included.

Official C2I loop (GRN-SPEC §F.1), per row of the batch:
  R = uniform random labels (fixed for the whole run); z = R
  for i in 0 .. S-1:
    t, t_next = t(u_i), t(u_{i+1})
    logits = guidance(net(z, t, y), net(z, t, null))            # CFG by batch doubling
    pred ~ Categorical(softmax(logits / temperature))            # sampled, never argmax
    keep ~ Bernoulli(t_next) per label                           # or: most confident (MaskGIT)
    z = where(keep, pred, R)                                     # put back the ORIGINAL R
  result = pred of the last step (t_next = 1 keeps every prediction)

Entropy-guided steps (GRN-SPEC §F.4; not in the official C2I code, so this is ours): at step
`warmup_steps` each row measures H, the mean normalised entropy of its conditional, un-tempered
prediction (entropy / log K, in [0, 1]), and sets its own budget, following the initial official
T2I/T2V code:
  total = warmup + clip(round(k * H + b), min_steps - warmup, max_steps - warmup)
after which its keep-ratio schedule is stretched to that budget (schedules.progress). Every row
stops on its own: finished rows are frozen (`done` flags), and the loop ends when all are done.

Everything that a user tunes per call (guidance scale and interval, temperature, k, b, schedule
shift) is a traced value of `SamplerSettings`: changing it never recompiles.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from grn_jax import hbq
from grn_jax.sampling import guidance
from grn_jax.sampling import schedules

# Constants of the official entropy -> steps map (initial GRN commit; fitted for T2I/T2V).
OFFICIAL_WARMUP_STEPS = 5
OFFICIAL_ENTROPY_K = 417.7052426732362
OFFICIAL_ENTROPY_B = -318.1272488653967
KEEP_MODES = ("random", "confidence")


@flax.struct.dataclass
class SamplerSettings:
  """Traced sampling knobs (scalars). Changing any of them never recompiles."""
  cfg_scale: Any = 1.0
  cfg_low: Any = 0.0          # interval low; < 0 selects power-cos guidance with exponent -low
  cfg_high: Any = 1.0
  temperature: Any = 1.0
  entropy_k: Any = OFFICIAL_ENTROPY_K
  entropy_b: Any = OFFICIAL_ENTROPY_B
  schedule_shift: Any = 1.0

  def as_arrays(self) -> "SamplerSettings":
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), self)


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """Static sampler structure (one compiled program per spec).

  Attributes:
    label_shape: (h, w, D) labels per image.
    label_classes: K, classes per label.
    null_class: the unconditional class index.
    hbq_rounds, label_mode: to dequantize labels to latents for `decode_fn`.
    num_steps: the fixed budget (and the base grid of the adaptive schedule).
    schedule: 'linear' | 'cosine' | 'shifted'.
    adaptive: entropy-guided per-row budgets.
    warmup_steps, min_steps, max_steps: adaptive settings (total steps, warm-up included).
    keep_mode: 'random' (official) | 'confidence' (keep the most confident predictions).
    trace: also return per-step label maps, keep masks and entropies.
  """
  label_shape: tuple[int, int, int]
  label_classes: int
  null_class: int
  hbq_rounds: int
  label_mode: str
  num_steps: int = 50
  schedule: str = "linear"
  adaptive: bool = False
  warmup_steps: int = OFFICIAL_WARMUP_STEPS
  min_steps: int = 10
  max_steps: int = 50
  keep_mode: str = "random"
  trace: bool = False

  def __post_init__(self):
    if self.schedule not in schedules.SCHEDULES:
      raise ValueError(f"sample.schedule must be one of {schedules.SCHEDULES}, got "
                       f"{self.schedule!r}.")
    if self.keep_mode not in KEEP_MODES:
      raise ValueError(f"sample.keep_mode must be one of {KEEP_MODES}, got {self.keep_mode!r}.")
    if self.num_steps < 1:
      raise ValueError(f"sample.num_steps must be >= 1, got {self.num_steps}.")
    if self.adaptive and not (0 < self.warmup_steps < self.min_steps <= self.max_steps):
      raise ValueError("adaptive sampling needs 0 < warmup_steps < min_steps <= max_steps, got "
                       f"{self.warmup_steps}, {self.min_steps}, {self.max_steps}.")
    if self.adaptive and self.warmup_steps >= self.num_steps:
      raise ValueError(f"sample.warmup_steps={self.warmup_steps} must be < num_steps="
                       f"{self.num_steps} (the base grid of the warm-up).")

  @property
  def loop_bound(self) -> int:
    return max(self.num_steps, self.max_steps) if self.adaptive else self.num_steps


@flax.struct.dataclass
class LoopState:
  step: jax.Array          # int32 [], global step index
  labels: jax.Array        # int32 [B, h, w, D], the network input z
  random_labels: jax.Array  # int32 [B, h, w, D], R (fixed)
  pred: jax.Array          # int32 [B, h, w, D], last sampled prediction
  total_steps: jax.Array   # int32 [B], each row's budget
  done: jax.Array          # bool [B]
  entropy: jax.Array       # float32 [B], H at the warm-up step (adaptive) or the last step
  nfe: jax.Array           # int32 [], network evaluations (a doubled CFG pass counts 2)
  trace_labels: Any        # int32 [bound + 1, B, h, w, D] or None
  trace_keep: Any          # bool [bound, B, h, w, D] or None
  trace_entropy: Any       # float32 [bound, B] or None


@flax.struct.dataclass
class SampleOutput:
  labels: jax.Array        # int32 [B, h, w, D], final labels
  images: Any              # decode_fn(latent) or None
  steps: jax.Array         # int32 [B], refinement steps used per row
  entropy: jax.Array       # float32 [B]
  nfe: jax.Array           # int32 [], total network evaluations of the batch
  trace: Any = None        # dict of per-step maps when spec.trace


def normalized_entropy(logits: jax.Array) -> jax.Array:
  """Mean over labels of entropy(softmax(logits)) / log K. logits [B, ..., K] -> [B]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1) / jnp.log(logits.shape[-1])
  return jnp.mean(ent.reshape(ent.shape[0], -1), axis=-1)


def budget_from_entropy(entropy, spec: SamplerSpec, settings: SamplerSettings):
  """Total steps per row: warmup + clip(round(k H + b), min - warmup, max - warmup)."""
  rest = jnp.round(settings.entropy_k * entropy + settings.entropy_b)
  rest = jnp.clip(rest, spec.min_steps - spec.warmup_steps, spec.max_steps - spec.warmup_steps)
  return (spec.warmup_steps + rest).astype(jnp.int32)


def _keep_mask(key, pred_logp, t_next, keep_mode: str):
  """bool [B, h, w, D]: which labels keep their prediction."""
  if keep_mode == "random":
    u = jax.random.uniform(key, pred_logp.shape)
    return u < t_next.reshape((-1,) + (1,) * (pred_logp.ndim - 1))
  # Confidence: keep the round(t_next * n) labels of each row whose sampled value is most
  # probable (ties broken by position), MaskGIT-style.
  batch = pred_logp.shape[0]
  flat = pred_logp.reshape(batch, -1)
  count = jnp.round(t_next * flat.shape[1]).astype(jnp.int32)
  rank = jnp.argsort(jnp.argsort(-flat, axis=1, stable=True), axis=1, stable=True)
  return (rank < count[:, None]).reshape(pred_logp.shape)


def make_sampler(apply_fn: Callable[..., jax.Array], spec: SamplerSpec,
                 decode_fn: Callable[[Any, jax.Array], jax.Array] | None = None):
  """Returns sample(params, class_labels, key, settings, decode_params=None) -> SampleOutput.

  `apply_fn(params, labels, keep_ratio, class_labels) -> logits float32 [B, h, w, D, K]`.
  `decode_fn(decode_params, latent float32 [B, h, w, d]) -> images`, run in the same program
  when given. class_labels int32 [B]; key a PRNG key; settings a SamplerSettings.
  """
  h, w, dim = spec.label_shape
  classes = spec.label_classes

  def forward(params, labels, t, class_labels, active_cfg, settings):
    """Guided logits; the unconditional half is skipped when no row needs guidance."""
    batch = labels.shape[0]

    def doubled(_):
      both = apply_fn(params, jnp.concatenate([labels, labels]), jnp.concatenate([t, t]),
                      jnp.concatenate([class_labels, jnp.full_like(class_labels,
                                                                   spec.null_class)]))
      cond, uncond = both[:batch], both[batch:]
      guided = guidance.combine(cond, uncond, t, settings.cfg_scale, settings.cfg_low,
                                settings.cfg_high)
      return cond, guided

    def cond_only(_):
      cond = apply_fn(params, labels, t, class_labels)
      return cond, cond

    cond, guided = jax.lax.cond(jnp.any(active_cfg), doubled, cond_only, None)
    return cond, guided, jnp.where(jnp.any(active_cfg), 2, 1)

  def sample(params, class_labels, key, settings: SamplerSettings,
             decode_params=None) -> SampleOutput:
    settings = settings.as_arrays()
    class_labels = jnp.asarray(class_labels, jnp.int32)
    batch = class_labels.shape[0]
    init_key, loop_key = jax.random.split(key)
    random_labels = jax.random.randint(init_key, (batch, h, w, dim), 0, classes, jnp.int32)
    bound = spec.loop_bound
    budget = jnp.full((batch,), spec.num_steps, jnp.int32)
    trace = spec.trace
    state = LoopState(
        step=jnp.zeros((), jnp.int32), labels=random_labels, random_labels=random_labels,
        pred=random_labels, total_steps=budget, done=jnp.zeros((batch,), bool),
        entropy=jnp.zeros((batch,), jnp.float32), nfe=jnp.zeros((), jnp.int32),
        trace_labels=(jnp.zeros((bound + 1, batch, h, w, dim), jnp.int32).at[0].set(
            random_labels) if trace else None),
        trace_keep=jnp.zeros((bound, batch, h, w, dim), bool) if trace else None,
        trace_entropy=jnp.zeros((bound, batch), jnp.float32) if trace else None)

    def cond_fn(s: LoopState):
      return jnp.logical_and(s.step < bound, jnp.logical_not(jnp.all(s.done)))

    def body_fn(s: LoopState) -> LoopState:
      step_key = jax.random.fold_in(loop_key, s.step)
      sample_key, keep_key = jax.random.split(step_key)
      u = schedules.progress(s.step, s.total_steps, spec.num_steps, spec.warmup_steps)
      t = schedules.keep_ratio(u, spec.schedule, settings.schedule_shift)
      t = jnp.where(s.step == 0, 0.0, t)
      active = jnp.logical_not(s.done)
      active_cfg = guidance.interval_active(t, settings.cfg_scale, settings.cfg_low,
                                            settings.cfg_high) & active
      cond, guided, passes = forward(params, s.labels, t, class_labels, active_cfg, settings)
      entropy_now = normalized_entropy(cond)
      total = s.total_steps
      entropy = s.entropy
      if spec.adaptive:
        measure = s.step == spec.warmup_steps
        total = jnp.where(measure & active, budget_from_entropy(entropy_now, spec, settings),
                          total)
        entropy = jnp.where(measure & active, entropy_now, entropy)
      else:
        entropy = jnp.where(active, entropy_now, entropy)
      logits = guided / settings.temperature
      pred = jax.random.categorical(sample_key, logits, axis=-1).astype(jnp.int32)
      u_next = schedules.progress(s.step + 1, total, spec.num_steps, spec.warmup_steps)
      t_next = schedules.keep_ratio(u_next, spec.schedule, settings.schedule_shift)
      last = s.step + 1 >= total
      t_next = jnp.where(last, 1.0, t_next)
      pred_logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), pred[..., None], -1)[
          ..., 0]
      keep = _keep_mask(keep_key, pred_logp, t_next, spec.keep_mode)
      keep = keep | last[:, None, None, None]
      new_labels = jnp.where(keep, pred, s.random_labels)
      rows = active[:, None, None, None]
      out = s.replace(
          step=s.step + 1,
          labels=jnp.where(rows, new_labels, s.labels),
          pred=jnp.where(rows, pred, s.pred),
          total_steps=total,
          done=s.done | (active & last),
          entropy=entropy,
          nfe=s.nfe + passes * jnp.sum(active).astype(jnp.int32))
      if trace:
        out = out.replace(
            trace_labels=s.trace_labels.at[s.step + 1].set(out.labels),
            trace_keep=s.trace_keep.at[s.step].set(keep & rows),
            trace_entropy=s.trace_entropy.at[s.step].set(jnp.where(active, entropy_now, 0.0)))
      return out

    final = jax.lax.while_loop(cond_fn, body_fn, state)
    images = None
    if decode_fn is not None:
      images = decode_fn(decode_params,
                         hbq.dequantize(final.pred, spec.hbq_rounds, spec.label_mode))
    trace_out = None
    if trace:
      trace_out = dict(labels=final.trace_labels, keep=final.trace_keep,
                       entropy=final.trace_entropy, random_labels=final.random_labels)
    return SampleOutput(labels=final.pred, images=images, steps=final.total_steps,
                        entropy=final.entropy, nfe=final.nfe, trace=trace_out)

  return sample


@functools.lru_cache(maxsize=32)
def _cached_jit(apply_fn, spec: SamplerSpec, decode_fn):
  return jax.jit(make_sampler(apply_fn, spec, decode_fn))


def jitted_sampler(apply_fn, spec: SamplerSpec, decode_fn=None):
  """One jitted sampler per (apply_fn, spec, decode_fn): repeated calls reuse the compilation."""
  return _cached_jit(apply_fn, spec, decode_fn)


def refinement_maps(trace: dict) -> dict[str, jax.Array]:
  """Per-step maps of the paper's framework figure, bool [steps, B, h, w, D].

  kept: the label holds a prediction after the step; filled: it held a random label before and
  a prediction after; erased: it held a prediction before and is put back to random after.
  """
  keep = trace["keep"]
  before = jnp.concatenate([jnp.zeros_like(keep[:1]), keep[:-1]])
  return dict(kept=keep, filled=keep & ~before, erased=before & ~keep)
