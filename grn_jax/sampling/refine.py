"""The GRN refinement sampler: one `lax.while_loop` inside one jit, decode included.

The loop, per row of the batch (official C2I loop, GRN-SPEC §F.1; T2I/T2V §F.2):
  R = uniform random labels (fixed for the whole run); z = R
  for i in 0 .. S-1:
    t = the keep ratio fed to the model: the schedule's t(u_i) ('nominal'), or the fraction of
        labels step i - 1 kept ('realised', official T2I/T2V; 0 at the first step)
    logits = guidance(net(z, t, cond), net(z, t, uncond))       # two passes or one doubled
    pred ~ Categorical(softmax(logits / temperature))            # sampled, never argmax
    keep ~ Bernoulli(t_next) per label                           # or: most confident (MaskGIT)
    z = where(keep, pred, R)                                     # put back the ORIGINAL R
  result = pred of the last step (with `final_keep_all`, t_next = 1 keeps every prediction)

The loop knows labels [B, *grid, D] of any rank (images [B, h, w, D], videos [B, T, h, w, D]),
keep ratios, schedules, guidance, budgets, keep modes and traces. What the model is conditioned
on is the family adapter's business: `cond` and its unconditional counterpart `uncond` are
pytrees that the loop hands to `apply_fn` and, for the doubled batch, concatenates.

The unconditional pass is only computed when some unfinished row needs guidance at its current
keep ratio; with the official C2I interval (0.44, 1.0) that saves 23 of 50 unconditional passes.
`spec.guidance_batching` says how the two passes run: 'doubled' (accelerators) is one forward of
the doubled batch, with a `lax.cond` between it and a conditional-only forward; 'sequential'
(CPU) is a `fori_loop` of one or two batch-B forwards through one compiled model body, because
a CPU forward of 2B rows costs more than two of B rows (GRN-B: 2.5x one of B at batch 8).

Fixed labels (`fixed_labels`, `fixed_mask`): every step's input and prediction hold the given
labels where the mask is set (image-to-video, inpainting, outpainting, video continuation);
they count as kept in the keep mask and in the realised keep ratio, and the entropy of adaptive
budgets is measured over the free labels only.

Entropy-guided steps (GRN-SPEC §F.4; not in the official C2I code, so this is ours). Per row:
  * H = mean over the labels of the entropy of the conditional, un-tempered categorical divided
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
    ends when every row is done. A `stop_rule` can end a row earlier (official T2I/T2V: once a
    step's input kept every label, `stop_when_input_complete`).

Everything that a user tunes per call (guidance scale and interval, temperature, k, b, schedule
shift) is a traced value of `SamplerSettings`: changing it never recompiles. Randomness is drawn
per row from that row's key, so a row's sample does not depend on the batch it is in or on how
the batch is sharded; a `Replay` replaces the draws by recorded ones.
"""

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from grn_jax import hbq
from grn_jax import tokenizer_io
from grn_jax.sampling import guidance
from grn_jax.sampling.spec import LoopState, Replay, SamplerSettings, SamplerSpec, SampleOutput

BATCH_AXES = ("data", "fsdp")


def normalized_entropy(logits: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Mean over labels of entropy(softmax(logits)) / log K. logits [B, ..., K] -> [B].

  With `weights` (bool or float [B, ...], the labels to average over) a weighted mean; a row
  without weight gets 0.
  """
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ent = -jnp.sum(jnp.exp(logp) * logp, axis=-1) / jnp.log(logits.shape[-1])
  ent = ent.reshape(ent.shape[0], -1)
  if weights is None:
    return jnp.mean(ent, axis=-1)
  weights = weights.reshape(ent.shape).astype(jnp.float32)
  return jnp.sum(ent * weights, axis=-1) / jnp.maximum(jnp.sum(weights, axis=-1), 1.0)


def budget_from_entropy(entropy: jax.Array, spec: SamplerSpec,
                        settings: SamplerSettings) -> jax.Array:
  """Total steps per row: clip(round(k H + b) + offset, min_steps, max_steps). int32 [B]."""
  steps = jnp.round(settings.entropy_k * entropy + settings.entropy_b) + spec.entropy_offset
  return jnp.clip(steps, spec.min_steps, spec.max_steps).astype(jnp.int32)


def stop_when_input_complete(keep_ratio: jax.Array, next_keep_ratio: jax.Array,
                             step: jax.Array) -> jax.Array:
  """Official T2I/T2V stop rule: a row stops after a step whose input kept every label."""
  del next_keep_ratio, step
  return jnp.abs(keep_ratio - 1.0) < 1e-6


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


def concat_leaves(cond: Any, uncond: Any) -> Any:
  """The doubled batch's conditioning: every leaf of cond and uncond concatenated on axis 0."""
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b]), cond, uncond)


def _rows(x: jax.Array, ndim: int) -> jax.Array:
  """[B] -> [B, 1, ..., 1] of rank ndim (broadcasts a per-row value over the labels)."""
  return x.reshape((-1,) + (1,) * (ndim - 1))


def _random_keep(keys, shape: tuple[int, ...], t_next):
  """bool [B, *shape]: each label keeps its prediction with probability t_next [B]."""
  u = jax.vmap(lambda k: jax.random.uniform(k, shape))(keys)
  return u < _rows(t_next, len(shape) + 1)


def _confident_keep(pred_logp, t_next):
  """bool [B, *grid, D]: the round(t_next * n) labels of each row whose sampled value is most
  probable (pred_logp, the log-probability of each sampled label; ties broken by position),
  MaskGIT-style."""
  batch = pred_logp.shape[0]
  flat = pred_logp.reshape(batch, -1)
  count = jnp.round(t_next * flat.shape[1]).astype(jnp.int32)
  rank = jnp.argsort(jnp.argsort(-flat, axis=1, stable=True), axis=1, stable=True)
  return (rank < count[:, None]).reshape(pred_logp.shape)


def _check_inputs(spec: SamplerSpec, keys, fixed_labels, fixed_mask, replay, settings):
  """Static checks of one call (shapes are known at trace time); errors say what to pass."""
  if keys.ndim != 1 or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    raise TypeError(f"keys must be typed PRNG keys, one per row [B], got {keys.dtype} "
                    f"{keys.shape}; make them with refine.row_keys(key, batch).")
  shape = (keys.shape[0],) + tuple(spec.label_shape)
  if (fixed_labels is None) != (fixed_mask is None):
    raise ValueError("fixed_labels and fixed_mask go together: pass both or neither.")
  if fixed_labels is not None:
    if fixed_labels.shape != shape or fixed_mask.shape != shape:
      raise ValueError(f"fixed_labels {fixed_labels.shape} and fixed_mask {fixed_mask.shape} "
                       f"must both have the labels' shape {shape}.")
    if fixed_mask.dtype != jnp.bool_:
      raise TypeError(f"fixed_mask must be bool, got {fixed_mask.dtype}.")
  if replay is not None:
    if spec.keep_mode != "random":
      raise ValueError("a replay gives keep uniforms: it needs keep_mode='random'.")
    steps = (spec.loop_bound,) + shape
    if (replay.init_labels.shape != shape or replay.samples.shape[1:] != shape
        or replay.uniforms.shape[1:] != shape or replay.samples.shape[0] < spec.loop_bound
        or replay.uniforms.shape[0] < spec.loop_bound):
      raise ValueError(f"replay: init_labels must be {shape}, samples and uniforms at least "
                       f"{steps}; got {replay.init_labels.shape}, {replay.samples.shape}, "
                       f"{replay.uniforms.shape}.")
  if settings.keep_table is not None:
    if spec.adaptive:
      raise ValueError("settings.keep_table is a fixed-budget schedule: it cannot serve "
                       "adaptive budgets (spec.adaptive=True).")
    if settings.keep_table.shape != (spec.num_steps,):
      raise ValueError(f"settings.keep_table must be float32 [{spec.num_steps}] (t_next of "
                       f"every step), got shape {settings.keep_table.shape}.")


def resolve_batching(spec: SamplerSpec, cond: Any = None, uncond: Any = None) -> str:
  """The guidance batching a sampler of `spec` runs: 'doubled' or 'sequential' ('auto':
  sequential on CPU, doubled on accelerators and wherever cond and uncond differ in structure
  or shapes, e.g. a prompt and a negative prompt of other lengths, which cannot be stacked)."""
  if spec.guidance_batching != "auto":
    return spec.guidance_batching
  if jax.default_backend() != "cpu":
    return "doubled"
  if cond is not None and (jax.tree.structure(cond) != jax.tree.structure(uncond) or any(
      jnp.shape(a) != jnp.shape(b) for a, b in zip(jax.tree.leaves(cond),
                                                    jax.tree.leaves(uncond)))):
    return "doubled"
  return "sequential"


def make_sampler(apply_fn: Callable[..., jax.Array], spec: SamplerSpec,
                 decode_fn: Callable[[Any, jax.Array], jax.Array] | None = None
                 ) -> Callable[..., SampleOutput]:
  """Returns the sampler fn (see `sample` below) of a model and a spec.

  Args:
    apply_fn: hashable `apply_fn(params, labels int32 [B, *grid, D], keep_ratio float32 [B],
      cond) -> logits [B, *grid, D, K]`.
    spec: the static structure.
    decode_fn: None, or `decode_fn(decode_params, latent float32 [B, *grid, d]) -> images`,
      run in the same program.
  """
  label_shape = tuple(spec.label_shape)
  values = spec.label_values
  ndim = len(label_shape) + 1
  schedule = spec.schedule
  concat = spec.concat_conditions or concat_leaves

  def guide(cond_logits, uncond_logits, t, settings):
    return guidance.combine(cond_logits, uncond_logits, t, settings.cfg_scale, settings.cfg_low,
                            settings.cfg_high, spec.guidance)

  def doubled_forward(params, labels, t, cond, uncond, any_cfg, settings):
    """The unconditional half of one doubled-batch forward, only when any_cfg."""
    batch = labels.shape[0]

    def doubled(_):
      both = apply_fn(params, jnp.concatenate([labels, labels]), jnp.concatenate([t, t]),
                      concat(cond, uncond))
      cond_logits, uncond_logits = both[:batch], both[batch:]
      return (cond_logits.astype(jnp.float32),
              guide(cond_logits, uncond_logits, t, settings).astype(jnp.float32))

    def cond_only(_):
      cond_logits = apply_fn(params, labels, t, cond).astype(jnp.float32)
      return cond_logits, cond_logits

    return jax.lax.cond(any_cfg, doubled, cond_only, None)

  def sequential_forward(params, labels, t, cond, uncond, any_cfg, settings):
    """Two batch-B passes (the second only when any_cfg) through one compiled model body."""
    try:
      conds = jax.tree.map(lambda a, b: jnp.stack([a, b]), cond, uncond)
    except (TypeError, ValueError) as e:
      raise ValueError("guidance_batching='sequential' stacks cond and uncond, which must have "
                       "the same structure and shapes; use guidance_batching='doubled' with "
                       f"concat_conditions otherwise ({e}).") from e
    logits = jax.eval_shape(apply_fn, params, labels, t, cond)

    def one_pass(i, out):
      return out.at[i].set(apply_fn(params, labels, t, jax.tree.map(lambda c: c[i], conds)))

    out = jnp.zeros((2,) + logits.shape, logits.dtype)
    out = jax.lax.fori_loop(0, jnp.where(any_cfg, 2, 1), one_pass, out)
    cond_logits = out[0].astype(jnp.float32)
    guided = jnp.where(any_cfg, guide(out[0], out[1], t, settings).astype(jnp.float32),
                       cond_logits)
    return cond_logits, guided

  def forward(params, labels, t, cond, uncond, need_cfg, settings):
    """(cond logits, guided logits, passes); the unconditional pass only when needed."""
    any_cfg = jnp.any(need_cfg)
    run = (sequential_forward if resolve_batching(spec, cond, uncond) == "sequential"
           else doubled_forward)
    cond_logits, guided = run(params, labels, t, cond, uncond, any_cfg, settings)
    return cond_logits, guided, jnp.where(any_cfg, 2, 1).astype(jnp.int32)

  def scheduled(settings, step, total):
    """Keep ratio after `step` completed steps, float32 [B] (the table: fixed budgets)."""
    if settings.keep_table is None:
      return schedule.keep_ratio_at(step, total, spec.num_steps, spec.warmup_steps,
                                    settings.schedule_shift)
    value = jnp.where(step > 0, settings.keep_table[jnp.maximum(step - 1, 0)], 0.0)
    return jnp.broadcast_to(value, total.shape)

  def sample(params, cond, uncond, keys, settings: SamplerSettings, decode_params=None, *,
             fixed_labels=None, fixed_mask=None, replay: Replay | None = None) -> SampleOutput:
    """Samples one row per key.

    Args:
      params: the model params (apply_fn's first argument).
      cond, uncond: pytrees, the conditioning of every row and its unconditional counterpart.
      keys: typed PRNG keys [B], one per row (refine.row_keys).
      settings: SamplerSettings (traced).
      decode_params: decode_fn's params.
      fixed_labels, fixed_mask: None, or int32 / bool [B, *grid, D]: labels held as given.
      replay: None, or a Replay whose draws replace the random ones.

    Returns:
      SampleOutput.
    """
    settings = settings.as_arrays()
    _check_inputs(spec, keys, fixed_labels, fixed_mask, replay, settings)
    batch = keys.shape[0]
    init_keys, keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
    if replay is None:
      random_labels = jax.vmap(
          lambda k: jax.random.randint(k, label_shape, 0, values, jnp.int32))(init_keys)
    else:
      random_labels = jnp.asarray(replay.init_labels, jnp.int32)
    free = None
    if fixed_labels is not None:
      fixed_labels = jnp.asarray(fixed_labels, jnp.int32)
      random_labels = jnp.where(fixed_mask, fixed_labels, random_labels)
      free = jnp.logical_not(fixed_mask)
    random_labels = shard_batch(random_labels)
    bound = spec.loop_bound
    trace = None
    if spec.trace:
      labels_trace = jnp.zeros((bound + 1, batch) + label_shape, jnp.int32)
      trace = dict(
          labels=labels_trace.at[0].set(random_labels),
          pred=jnp.zeros((bound, batch) + label_shape, jnp.int32),
          keep=jnp.zeros((bound, batch) + label_shape, bool),
          active=jnp.zeros((bound, batch), bool),
          entropy=jnp.zeros((bound, batch), jnp.float32),
          keep_ratio=jnp.zeros((bound, batch), jnp.float32))
      if spec.trace_probs:
        trace["probs"] = jnp.zeros((bound, batch) + label_shape + (values,), jnp.float32)
    state = LoopState(
        step=jnp.zeros((), jnp.int32), labels=random_labels, random_labels=random_labels,
        pred=random_labels, realised=jnp.zeros((batch,), jnp.float32),
        total_steps=jnp.full((batch,), spec.num_steps, jnp.int32),
        done=jnp.zeros((batch,), bool), entropy=jnp.zeros((batch,), jnp.float32),
        row_nfe=jnp.zeros((batch,), jnp.int32), nfe=jnp.zeros((), jnp.int32), trace=trace)

    def cond_fn(s: LoopState):
      return jnp.logical_and(s.step < bound, jnp.logical_not(jnp.all(s.done)))

    def body_fn(s: LoopState) -> LoopState:
      step_keys = jax.vmap(lambda k: jax.random.fold_in(k, s.step))(keys)
      split = jax.vmap(jax.random.split)(step_keys)
      sample_keys, keep_keys = split[:, 0], split[:, 1]
      if spec.model_keep_ratio == "realised":
        t = s.realised
      else:
        t = scheduled(settings, s.step, s.total_steps)
      active = jnp.logical_not(s.done)
      need_cfg = guidance.active(t, settings.cfg_scale, settings.cfg_low, settings.cfg_high,
                                 spec.guidance) & active
      cond_logits, guided, passes = forward(params, s.labels, t, cond, uncond, need_cfg,
                                            settings)
      entropy_now = normalized_entropy(cond_logits, free)
      total = s.total_steps
      measure = active & (s.step == min(spec.warmup_steps, bound - 1))
      if spec.adaptive:
        total = jnp.where(measure, budget_from_entropy(entropy_now, spec, settings), total)
      # Record H at the warm-up step (also without adaptivity: the pairs to fit k and b).
      entropy = jnp.where(measure | (active & (s.step < spec.warmup_steps)), entropy_now,
                          s.entropy)
      logits = guided / settings.temperature
      if replay is None:
        pred = jax.vmap(lambda k, l: jax.random.categorical(k, l, axis=-1))(
            sample_keys, logits).astype(jnp.int32)
      else:
        pred = jnp.asarray(replay.samples[s.step], jnp.int32)
      if fixed_labels is not None:
        pred = jnp.where(fixed_mask, fixed_labels, pred)
      t_next = scheduled(settings, s.step + 1, total)
      last = s.step + 1 >= total
      if spec.stop_rule is not None:
        stop = spec.stop_rule(t, t_next, s.step) & active
        last = last | stop
        total = jnp.where(stop, s.step + 1, total)
      if schedule.final_keep_all:
        t_next = jnp.where(last, 1.0, t_next)
      if replay is not None:
        keep = replay.uniforms[s.step] < _rows(t_next, ndim)
      elif spec.keep_mode == "confidence":
        log_probs = jax.nn.log_softmax(logits, -1)
        keep = _confident_keep(
            jnp.take_along_axis(log_probs, pred[..., None], -1)[..., 0], t_next)
      else:
        keep = _random_keep(keep_keys, label_shape, t_next)
      if schedule.final_keep_all:
        keep = keep | _rows(last, ndim)
      if fixed_labels is not None:
        keep = keep | fixed_mask
      new_labels = jnp.where(keep, pred, s.random_labels)
      rows = _rows(active, ndim)
      out = s.replace(
          step=s.step + 1,
          labels=shard_batch(jnp.where(rows, new_labels, s.labels)),
          pred=shard_batch(jnp.where(rows, pred, s.pred)),
          total_steps=total,
          done=s.done | (active & last),
          entropy=entropy,
          row_nfe=s.row_nfe + jnp.where(active, 1 + need_cfg.astype(jnp.int32), 0),
          nfe=s.nfe + passes * jnp.sum(active).astype(jnp.int32))
      if spec.model_keep_ratio == "realised":
        flat = keep.reshape(batch, -1)
        kept = jnp.sum(flat, axis=1, dtype=jnp.int32)
        # float32(kept / n) correctly rounded, as the reference's mask.float().mean(): XLA
        # turns a division by the constant n into a product with 1 / n (off by an ulp), so n
        # is counted at run time.
        count = kept + jnp.sum(~flat, axis=1, dtype=jnp.int32)
        out = out.replace(realised=jnp.where(
            active, kept.astype(jnp.float32) / count.astype(jnp.float32), s.realised))
      if spec.trace:
        tr = s.trace
        new_trace = dict(
            labels=tr["labels"].at[s.step + 1].set(out.labels),
            pred=tr["pred"].at[s.step].set(out.pred),
            # A frozen row holds its final prediction everywhere: all kept, nothing changes.
            keep=tr["keep"].at[s.step].set(keep | ~rows),
            active=tr["active"].at[s.step].set(active),
            entropy=tr["entropy"].at[s.step].set(jnp.where(active, entropy_now, 0.0)),
            keep_ratio=tr["keep_ratio"].at[s.step].set(jnp.where(active, t, 1.0)))
        if spec.trace_probs:
          probs = jax.nn.softmax(logits, -1)
          new_trace["probs"] = tr["probs"].at[s.step].set(
              jnp.where(_rows(active, probs.ndim), probs, 0.0))
        out = out.replace(trace=new_trace)
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


def jitted_sampler(apply_fn: Callable[..., jax.Array], spec: SamplerSpec,
                   decode_fn: Callable[[Any, jax.Array], Any] | None = None
                   ) -> Callable[..., SampleOutput]:
  """One jitted sampler per (apply_fn, spec, decode_fn): repeated calls reuse the compilation."""
  return _cached_jit(apply_fn, spec, decode_fn)


def refinement_maps(trace: dict) -> dict[str, jax.Array]:
  """Per-step maps of the paper's framework figure, bool [steps, B, *grid, D].

  Whether a label holds a prediction (rather than its random label) before and after step i:
    filled: random before, prediction after;
    kept:   prediction before and after (re-sampled: kept positions are refined too);
    erased: prediction before, put back to its random label after.
  """
  keep = jnp.asarray(trace["keep"])
  before = jnp.concatenate([jnp.zeros_like(keep[:1]), keep[:-1]])
  return dict(kept=keep & before, filled=keep & ~before, erased=before & ~keep)

