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

The unconditional half of the doubled batch is only computed when some unfinished row needs
guidance at its current keep ratio (`lax.cond` between a doubled and a conditional-only
forward); with the official interval (0.44, 1.0) that saves 23 of 50 unconditional passes.

Entropy-guided steps (GRN-SPEC §F.4; not in the official C2I code, so this is ours). Per row:
  * H = mean over all labels of the entropy of the conditional, un-tempered categorical divided
    by log K (in [0, 1]; for 'bit' labels, K = 2, the normalised binary entropy), measured at
    step index `warmup_steps` (after that many completed warm-up steps on the `num_steps` grid,
    as in the initial official code).
  * steps = clip(round(k H + b) + offset, min_steps, max_steps), the row's TOTAL number of
    refinement steps (= network passes of the row), warm-up included. offset = warmup_steps when
    `entropy_budget == 'after_warmup'` (the initial official code's convention, in which k H + b
    counts the steps after warm-up and its constants k = 417.705, b = -318.127 were fitted), 0
    when `entropy_budget == 'total'` (the public `complexity_aware_k/b` convention: k = 0, b = 50
    means 50 steps). The official code's clip of the remainder to [Tmin - wp, Tmax - wp] is the
    same as our clip of the total to [Tmin, Tmax].
  * The keep-ratio schedule after warm-up is stretched to the budget (`schedules.progress`):
    warm-up step i uses u = i / num_steps, later steps
    u = wp / num_steps + (1 - wp / num_steps) (i - wp) / (steps - wp), reaching 1 at the last.
    Unlike the initial T2I code we run no extra pass at t = 1 after the keep ratio reached 1: the
    output is the last step's prediction, as in the official C2I sampler.
  * Rows stop on their own (`done` flags; finished rows are frozen with jnp.where) and the loop
    ends when every row is done.

Everything that a user tunes per call (guidance scale and interval, temperature, k, b, schedule
shift) is a traced value of `SamplerSettings`: changing it never recompiles. Randomness is drawn
per row from that row's key, so a row's sample does not depend on the batch it is in or on how
the batch is sharded.
"""

import dataclasses
import functools
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from grn_jax import hbq
from grn_jax import tokenizer_io
from grn_jax.sampling import guidance
from grn_jax.sampling import schedules

# Constants of the official entropy -> steps map (initial GRN commit; fitted for T2I/T2V in the
# 'after_warmup' convention).
OFFICIAL_WARMUP_STEPS = 5
OFFICIAL_ENTROPY_K = 417.7052426732362
OFFICIAL_ENTROPY_B = -318.1272488653967
KEEP_MODES = ("random", "confidence")
ENTROPY_BUDGETS = ("after_warmup", "total")
BATCH_AXES = ("data", "fsdp")


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
    num_steps: the fixed budget (and the base grid of the adaptive warm-up).
    schedule: 'linear' | 'cosine' | 'shifted'.
    adaptive: entropy-guided per-row budgets.
    warmup_steps, min_steps, max_steps: adaptive settings (total steps, warm-up included).
    entropy_budget: 'after_warmup' | 'total', what round(k H + b) counts (module docstring).
    keep_mode: 'random' (official) | 'confidence' (keep the most confident predictions).
    trace: also return per-step label maps, predictions, keep masks and entropies.
    trace_previews: with `trace` and a decode_fn, also decode every step's input and prediction
      (uint8 images) inside the same program.
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
  entropy_budget: str = "after_warmup"
  keep_mode: str = "random"
  trace: bool = False
  trace_previews: bool = False

  def __post_init__(self):
    if self.schedule not in schedules.SCHEDULES:
      raise ValueError(f"sample.schedule must be one of {schedules.SCHEDULES}, got "
                       f"{self.schedule!r}.")
    if self.keep_mode not in KEEP_MODES:
      raise ValueError(f"sample.keep_mode must be one of {KEEP_MODES}, got {self.keep_mode!r}.")
    if self.entropy_budget not in ENTROPY_BUDGETS:
      raise ValueError(f"sample.entropy_budget must be one of {ENTROPY_BUDGETS}, got "
                       f"{self.entropy_budget!r}.")
    if self.label_mode not in ("ind", "bit"):
      raise ValueError(f"label_mode must be 'ind' or 'bit', got {self.label_mode!r}.")
    if self.num_steps < 1:
      raise ValueError(f"sample.num_steps must be >= 1, got {self.num_steps}.")
    if self.adaptive and not (0 < self.warmup_steps < self.min_steps <= self.max_steps):
      raise ValueError("adaptive sampling needs 0 < warmup_steps < min_steps <= max_steps, got "
                       f"{self.warmup_steps}, {self.min_steps}, {self.max_steps}.")
    if self.adaptive and self.warmup_steps >= self.num_steps:
      raise ValueError(f"sample.warmup_steps={self.warmup_steps} must be < num_steps="
                       f"{self.num_steps} (the base grid of the warm-up).")
    if self.trace_previews and not self.trace:
      raise ValueError("trace_previews needs trace=True.")

  @property
  def loop_bound(self) -> int:
    return max(self.num_steps, self.max_steps) if self.adaptive else self.num_steps

  @property
  def entropy_offset(self) -> int:
    return self.warmup_steps if self.entropy_budget == "after_warmup" else 0


@flax.struct.dataclass
class LoopState:
  step: jax.Array           # int32 [], global step index
  labels: jax.Array         # int32 [B, h, w, D], the network input z
  random_labels: jax.Array  # int32 [B, h, w, D], R (fixed)
  pred: jax.Array           # int32 [B, h, w, D], last sampled prediction
  total_steps: jax.Array    # int32 [B], each row's budget
  done: jax.Array           # bool [B]
  entropy: jax.Array        # float32 [B], H at step `warmup_steps` (else the last step's)
  row_nfe: jax.Array        # int32 [B], evaluations each row needed (1 or 2 per step)
  nfe: jax.Array            # int32 [], evaluations computed (a doubled CFG pass counts 2)
  trace: Any                # dict of per-step arrays or None


@flax.struct.dataclass
class SampleOutput:
  labels: jax.Array         # int32 [B, h, w, D], final labels
  images: Any               # decode_fn(latent) or None
  steps: jax.Array          # int32 [B], refinement steps (network passes) used per row
  entropy: jax.Array        # float32 [B], H at step warmup_steps (last step's if never reached)
  row_nfe: jax.Array        # int32 [B], network evaluations each row needed (cond + uncond)
  nfe: jax.Array            # int32 [], evaluations the batch computed (incl. frozen rows)
  trace: Any = None         # dict of per-step maps when spec.trace


def normalized_entropy(logits: jax.Array) -> jax.Array:
  """Mean over labels of entropy(softmax(logits)) / log K. logits [B, ..., K] -> [B]."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1) / jnp.log(logits.shape[-1])
  return jnp.mean(ent.reshape(ent.shape[0], -1), axis=-1)


def budget_from_entropy(entropy, spec: SamplerSpec, settings: SamplerSettings):
  """Total steps per row: clip(round(k H + b) + offset, min_steps, max_steps). int32 [B]."""
  steps = jnp.round(settings.entropy_k * entropy + settings.entropy_b) + spec.entropy_offset
  return jnp.clip(steps, spec.min_steps, spec.max_steps).astype(jnp.int32)


def row_keys(key: jax.Array, batch: int) -> jax.Array:
  """Per-row keys [B] from one key (split) or from keys [B] (as given)."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    raise TypeError("the sampler needs typed PRNG keys (jax.random.key), got dtype "
                    f"{key.dtype}; wrap raw keys with jax.random.wrap_key_data.")
  if key.ndim == 0:
    return jax.random.split(key, batch)
  if key.shape != (batch,):
    raise ValueError(f"keys must be one key or one per row [{batch}], got shape {key.shape}.")
  return key


def shard_batch(x: jax.Array) -> jax.Array:
  """Constrains the leading axis to the mesh's batch axes when a mesh is set (else no-op)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  axes = tuple(a for a in BATCH_AXES if a in mesh.axis_names)
  size = 1
  for a in axes:
    size *= mesh.shape[a]
  if not axes or x.shape[0] % size:
    return x
  return jax.lax.with_sharding_constraint(x, PartitionSpec(axes, *([None] * (x.ndim - 1))))


def _keep_mask(keys, pred_logp, t_next, keep_mode: str):
  """bool [B, h, w, D]: which labels keep their prediction."""
  if keep_mode == "random":
    u = jax.vmap(lambda k: jax.random.uniform(k, pred_logp.shape[1:]))(keys)
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
  when given. class_labels int32 [B]; key one typed PRNG key or one per row [B]; settings a
  SamplerSettings.
  """
  h, w, dim = spec.label_shape
  classes = spec.label_classes

  def forward(params, labels, t, class_labels, need_cfg, settings):
    """(cond logits, guided logits, passes); the unconditional half only when needed."""
    batch = labels.shape[0]

    def doubled(_):
      both = apply_fn(params, jnp.concatenate([labels, labels]), jnp.concatenate([t, t]),
                      jnp.concatenate([class_labels,
                                       jnp.full_like(class_labels, spec.null_class)]))
      cond, uncond = both[:batch], both[batch:]
      guided = guidance.combine(cond, uncond, t, settings.cfg_scale, settings.cfg_low,
                                settings.cfg_high)
      return cond.astype(jnp.float32), guided.astype(jnp.float32)

    def cond_only(_):
      cond = apply_fn(params, labels, t, class_labels).astype(jnp.float32)
      return cond, cond

    any_cfg = jnp.any(need_cfg)
    cond, guided = jax.lax.cond(any_cfg, doubled, cond_only, None)
    return cond, guided, jnp.where(any_cfg, 2, 1).astype(jnp.int32)

  def sample(params, class_labels, key, settings: SamplerSettings,
             decode_params=None) -> SampleOutput:
    settings = settings.as_arrays()
    class_labels = shard_batch(jnp.asarray(class_labels, jnp.int32))
    batch = class_labels.shape[0]
    init_keys, keys = jnp.moveaxis(jax.vmap(jax.random.split)(row_keys(key, batch)), 1, 0)
    random_labels = jax.vmap(
        lambda k: jax.random.randint(k, (h, w, dim), 0, classes, jnp.int32))(init_keys)
    random_labels = shard_batch(random_labels)
    bound = spec.loop_bound
    trace = None
    if spec.trace:
      trace = dict(
          labels=jnp.zeros((bound + 1, batch, h, w, dim), jnp.int32).at[0].set(random_labels),
          pred=jnp.zeros((bound, batch, h, w, dim), jnp.int32),
          keep=jnp.zeros((bound, batch, h, w, dim), bool),
          active=jnp.zeros((bound, batch), bool),
          entropy=jnp.zeros((bound, batch), jnp.float32),
          keep_ratio=jnp.zeros((bound, batch), jnp.float32))
    state = LoopState(
        step=jnp.zeros((), jnp.int32), labels=random_labels, random_labels=random_labels,
        pred=random_labels, total_steps=jnp.full((batch,), spec.num_steps, jnp.int32),
        done=jnp.zeros((batch,), bool), entropy=jnp.zeros((batch,), jnp.float32),
        row_nfe=jnp.zeros((batch,), jnp.int32), nfe=jnp.zeros((), jnp.int32), trace=trace)

    def cond_fn(s: LoopState):
      return jnp.logical_and(s.step < bound, jnp.logical_not(jnp.all(s.done)))

    def body_fn(s: LoopState) -> LoopState:
      step_keys = jax.vmap(lambda k: jax.random.fold_in(k, s.step))(keys)
      split = jax.vmap(jax.random.split)(step_keys)
      sample_keys, keep_keys = split[:, 0], split[:, 1]
      u = schedules.progress(s.step, s.total_steps, spec.num_steps, spec.warmup_steps)
      t = schedules.keep_ratio(u, spec.schedule, settings.schedule_shift)
      active = jnp.logical_not(s.done)
      need_cfg = guidance.interval_active(t, settings.cfg_scale, settings.cfg_low,
                                          settings.cfg_high) & active
      cond, guided, passes = forward(params, s.labels, t, class_labels, need_cfg, settings)
      entropy_now = normalized_entropy(cond)
      total = s.total_steps
      measure = active & (s.step == min(spec.warmup_steps, bound - 1))
      if spec.adaptive:
        total = jnp.where(measure, budget_from_entropy(entropy_now, spec, settings), total)
      # Record H at the warm-up step (also without adaptivity: the pairs to fit k and b).
      entropy = jnp.where(measure | (active & (s.step < spec.warmup_steps)), entropy_now,
                          s.entropy)
      logits = guided / settings.temperature
      pred = jax.vmap(lambda k, l: jax.random.categorical(k, l, axis=-1))(
          sample_keys, logits).astype(jnp.int32)
      u_next = schedules.progress(s.step + 1, total, spec.num_steps, spec.warmup_steps)
      t_next = schedules.keep_ratio(u_next, spec.schedule, settings.schedule_shift)
      last = s.step + 1 >= total
      t_next = jnp.where(last, 1.0, t_next)
      log_probs = jax.nn.log_softmax(logits, -1)
      pred_logp = jnp.take_along_axis(log_probs, pred[..., None], -1)[..., 0]
      keep = _keep_mask(keep_keys, pred_logp, t_next, spec.keep_mode)
      keep = keep | last[:, None, None, None]
      new_labels = jnp.where(keep, pred, s.random_labels)
      rows = active[:, None, None, None]
      out = s.replace(
          step=s.step + 1,
          labels=shard_batch(jnp.where(rows, new_labels, s.labels)),
          pred=shard_batch(jnp.where(rows, pred, s.pred)),
          total_steps=total,
          done=s.done | (active & last),
          entropy=entropy,
          row_nfe=s.row_nfe + jnp.where(active, 1 + need_cfg.astype(jnp.int32), 0),
          nfe=s.nfe + passes * jnp.sum(active).astype(jnp.int32))
      if spec.trace:
        tr = s.trace
        out = out.replace(trace=dict(
            labels=tr["labels"].at[s.step + 1].set(out.labels),
            pred=tr["pred"].at[s.step].set(out.pred),
            # A frozen row holds its final prediction everywhere: all kept, nothing changes.
            keep=tr["keep"].at[s.step].set(keep | ~rows),
            active=tr["active"].at[s.step].set(active),
            entropy=tr["entropy"].at[s.step].set(jnp.where(active, entropy_now, 0.0)),
            keep_ratio=tr["keep_ratio"].at[s.step].set(jnp.where(active, t, 1.0))))
      return out

    final = jax.lax.while_loop(cond_fn, body_fn, state)
    images = None
    if decode_fn is not None:
      images = decode_fn(decode_params,
                         hbq.dequantize(final.pred, spec.hbq_rounds, spec.label_mode))
    trace_out = None
    if spec.trace:
      trace_out = dict(final.trace, random_labels=final.random_labels)
      if spec.trace_previews and decode_fn is not None:
        def preview(labels):
          latent = hbq.dequantize(labels, spec.hbq_rounds, spec.label_mode)
          return tokenizer_io.to_uint8(decode_fn(decode_params, latent))
        trace_out["input_images"] = jax.lax.map(preview, final.trace["labels"])
        trace_out["pred_images"] = jax.lax.map(preview, final.trace["pred"])
    return SampleOutput(labels=final.pred, images=images, steps=final.total_steps,
                        entropy=final.entropy, row_nfe=final.row_nfe, nfe=final.nfe,
                        trace=trace_out)

  return sample


@functools.lru_cache(maxsize=32)
def _cached_jit(apply_fn, spec: SamplerSpec, decode_fn):
  return jax.jit(make_sampler(apply_fn, spec, decode_fn))


def jitted_sampler(apply_fn, spec: SamplerSpec, decode_fn=None):
  """One jitted sampler per (apply_fn, spec, decode_fn): repeated calls reuse the compilation."""
  return _cached_jit(apply_fn, spec, decode_fn)


def refinement_maps(trace: dict) -> dict[str, jax.Array]:
  """Per-step maps of the paper's framework figure, bool [steps, B, h, w, D].

  Whether a label holds a prediction (rather than its random label) before and after step i:
    filled: random before, prediction after;
    kept:   prediction before and after (re-sampled: kept positions are refined too);
    erased: prediction before, put back to its random label after.
  """
  keep = jnp.asarray(trace["keep"])
  before = jnp.concatenate([jnp.zeros_like(keep[:1]), keep[:-1]])
  return dict(kept=keep & before, filled=keep & ~before, erased=before & ~keep)
