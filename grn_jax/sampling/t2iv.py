"""The text-to-image / text-to-video adapter of the refinement sampler (GRN-SPEC §F.2, §F.4, §L).

  text = encode_text_fn(model)(params, features, mask)          # TextCache, once per batch
  sample = make_sampler(model, shape=(T, h, w), h_div_w=1.0, num_steps=50, schedule_steps=50,
                        trace=False)
  out = sample(params, text_cond, text_uncond, settings, key)   # out.labels, out.latent, ...

The official HEAD sampler (`autoregressive_infer`), run through the one loop of
sampling/refine.py:
  * the conditioning of a row is its prompt's `TextCache` (every layer's text keys and values,
    computed once by `encode_text` and attended at every step), the unconditional one the
    negative prompt's; both are padded to one length and concatenated for the doubled batch;
  * guidance `uncond + w (cond - uncond)` while the step's scale value is >= cfg_interval
    (official `cfg_interval_x`), then logits / temperature and a categorical draw of every bit;
  * keep ratio t_next = 0.999 (1 - cos(pi/2 shift(min(1, (i + 1) / (Tmax - 1)), snr_shift)))
    (`schedule_steps` = Tmax), each prediction kept with probability t_next, else the initial
    random label; the *realised* kept fraction is the next step's scale-token value; a row stops
    after a step whose input kept every label (official break); the output is the last step's
    prediction. t_next is the float64 formula rounded once to float32 (schedules.exact_table),
    as the official code compares its float32 uniforms with a float64 value.
  * `snr_shift` is the plain shift a of shift_pt (the official `alpha > 1000` encoding,
    a = alpha - 1000, is not used by the T2I/T2V pipeline and not accepted here).

Everything per call is traced (cfg_scale, cfg_interval, temperature, snr_shift, entropy k, b):
changing it never recompiles. Row r of a call with one key uses fold_in(key, r): a row's
sample does not depend on the batch size or on the other prompts of its batch (keys [B] are
used as given). Prompts of different lengths share a batch: their caches are padded to the
batch's length bucket and masked.

Entropy-guided steps (`adaptive=True`, ours: the official T2I/T2V HEAD has none): the initial
official commit's rule -- H of the conditional, un-tempered prediction at step `warmup_steps`
(5), total steps clip(round(k H + b) + 5, min_steps, max_steps) with its constants k = 417.705,
b = -318.127 -- on the HEAD sampler: the cosine keep ratio (same cap and shift), realised
scale values, stretched after the warm-up so that u reaches 1 at each row's budget (warm-up
on the `num_steps` grid, as the initial code's 50-step grid).
"""

import dataclasses
import functools
from typing import Any, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from grn_jax import hbq
from grn_jax.models import grn_t2iv
from grn_jax.sampling import refine
from grn_jax.sampling import schedules
from grn_jax.sampling import spec as spec_lib
from grn_jax.sampling.spec import Replay, SamplerSettings, SamplerSpec

SETTINGS_FIELDS = ("cfg_scale", "cfg_interval", "temperature", "snr_shift")
ADAPTIVE_FIELDS = ("entropy_k", "entropy_b")


@flax.struct.dataclass
class T2IVSettings:
  """Traced T2I/T2V sampling knobs (official pipeline names). Changing them never recompiles.

  Attributes:
    cfg_scale: guidance scale w (official guidance_scale / cfg_val).
    cfg_interval: guidance only at steps whose scale value is >= this (official cfg_interval_x).
    temperature: logits are divided by it (official tau).
    snr_shift: the keep-ratio shift a (1: none).
    entropy_k, entropy_b: the entropy -> steps map of adaptive sampling ('after_warmup').
  """
  cfg_scale: Any = 3.0
  cfg_interval: Any = 0.0
  temperature: Any = 1.0
  snr_shift: Any = 1.0
  entropy_k: Any = spec_lib.OFFICIAL_ENTROPY_K
  entropy_b: Any = spec_lib.OFFICIAL_ENTROPY_B

  def as_arrays(self) -> "T2IVSettings":
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), self)


def as_settings(settings: Any) -> T2IVSettings:
  """T2IVSettings from itself, a mapping or an object with the fields (extra keys refused)."""
  if isinstance(settings, T2IVSettings):
    return settings
  fields = dict(settings) if isinstance(settings, Mapping) else {
      f: getattr(settings, f) for f in SETTINGS_FIELDS + ADAPTIVE_FIELDS if hasattr(settings, f)}
  missing = [f for f in SETTINGS_FIELDS if f not in fields]
  unknown = sorted(set(fields) - set(SETTINGS_FIELDS + ADAPTIVE_FIELDS))
  if missing or unknown:
    raise ValueError(f"T2I/T2V settings: missing {missing}, unknown {unknown}; give "
                     f"{SETTINGS_FIELDS} (and optionally {ADAPTIVE_FIELDS}).")
  return T2IVSettings(**fields)


@flax.struct.dataclass
class T2IVTrace:
  """Per-step record of a traced call (S = the loop bound, num_steps or max_steps)."""
  inputs: jax.Array    # int32 [S, B, T, h, w, D], the labels fed to step s
  scale: jax.Array     # float32 [S, B], step s's scale-token value (1 once a row stopped)
  probs: jax.Array     # float32 [S, B, T, h, w, D], P(label 1) after guidance and temperature
  pred: jax.Array      # int32 [S, B, T, h, w, D], step s's draw
  keep: jax.Array      # bool [S, B, T, h, w, D], where step s kept its draw
  entropy: jax.Array   # float32 [S, B], normalised entropy of the conditional prediction
  active: jax.Array    # bool [S, B], rows still refining at step s
  previews: Any = None  # dict(input_images, pred_images) uint8, with trace_previews


@flax.struct.dataclass
class T2IVOutput:
  labels: jax.Array     # int32 [B, T, h, w, D], the last step's prediction
  latent: jax.Array     # float32 [B, T, h, w, latent_dim], dequantized labels
  images: Any           # decode_fn(latent) (e.g. uint8 [B, F, H, W, 3]) or None
  steps: jax.Array      # int32 [B], refinement steps (network passes) per row
  entropy: jax.Array    # float32 [B], H at step warmup_steps
  row_nfe: jax.Array    # int32 [B], network evaluations per row (cond + uncond)
  nfe: jax.Array        # int32 [], evaluations the batch computed
  trace: Any = None     # T2IVTrace with trace=True


@dataclasses.dataclass(frozen=True)
class DenoiseApply:
  """Hashable `apply_fn(params, labels, keep_ratio, text) -> logits` of a GRNT2IV module."""
  module: grn_t2iv.GRNT2IV
  h_div_w: float
  rules: tuple = ()

  def __call__(self, params, labels, keep_ratio, text):
    with nn.logical_axis_rules(self.rules):
      return self.module.apply({"params": params}, labels, keep_ratio, text,
                               h_div_w=self.h_div_w, method="denoise")


def as_text_cache(text: Any) -> grn_t2iv.TextCache:
  """A TextCache from itself or a mapping with keys, values and mask."""
  if isinstance(text, grn_t2iv.TextCache):
    return text
  return grn_t2iv.TextCache(keys=text["keys"], values=text["values"], mask=text["mask"])


def pad_text(text: grn_t2iv.TextCache, length: int, batch: int) -> grn_t2iv.TextCache:
  """The cache padded (masked) to `length` text rows and broadcast to `batch` prompts."""
  pad = length - text.mask.shape[1]
  keys, values, mask = text.keys, text.values, text.mask
  if pad:
    widths = ((0, 0), (0, 0), (0, pad), (0, 0), (0, 0))
    keys, values = jnp.pad(keys, widths), jnp.pad(values, widths)
    mask = jnp.pad(mask, ((0, 0), (0, pad)))
  if mask.shape[0] != batch:
    if mask.shape[0] != 1:
      raise ValueError(f"a text cache of {mask.shape[0]} prompts cannot serve {batch} rows; "
                       "give one (e.g. the negative prompt) or one per row.")
    keys = jnp.broadcast_to(keys, keys.shape[:1] + (batch,) + keys.shape[2:])
    values = jnp.broadcast_to(values, values.shape[:1] + (batch,) + values.shape[2:])
    mask = jnp.broadcast_to(mask, (batch,) + mask.shape[1:])
  return grn_t2iv.TextCache(keys=keys, values=values, mask=mask)


def concat_text(cond: grn_t2iv.TextCache, uncond: grn_t2iv.TextCache) -> grn_t2iv.TextCache:
  """The doubled batch's text: [cond rows; uncond rows], both padded to the longer length
  (the cache's batch axis is 1 for keys and values)."""
  length = max(cond.mask.shape[1], uncond.mask.shape[1])
  batch = cond.mask.shape[0]
  cond, uncond = pad_text(cond, length, batch), pad_text(uncond, length, batch)
  return grn_t2iv.TextCache(keys=jnp.concatenate([cond.keys, uncond.keys], axis=1),
                            values=jnp.concatenate([cond.values, uncond.values], axis=1),
                            mask=jnp.concatenate([cond.mask, uncond.mask], axis=0))


def sampler_spec(model: grn_t2iv.GRNT2IV, shape: tuple[int, int, int], num_steps: int,
                 schedule_steps: int, trace: bool = False, adaptive: bool = False,
                 warmup_steps: int = spec_lib.OFFICIAL_WARMUP_STEPS, min_steps: int = 10,
                 max_steps: int | None = None, trace_previews: bool = False) -> SamplerSpec:
  """The loop's static structure for labels [B, T, h, w, D] of `model` (see the docstring)."""
  if len(shape) != 3 or min(shape) < 1:
    raise ValueError(f"shape must be (latent frames T, h, w), got {shape!r}.")
  if adaptive:
    schedule = schedules.Schedule(kind="cosine", max_keep=schedules.OFFICIAL_T2IV_MAX_KEEP,
                                  final_keep_all=False)
  else:
    schedule = schedules.official_t2iv(schedule_steps)
  return SamplerSpec(
      label_shape=tuple(shape) + (model.labels_per_token,),
      label_values=grn_t2iv.LABEL_CLASSES, hbq_rounds=model.hbq_rounds, label_mode="bit",
      num_steps=num_steps, schedule=schedule, adaptive=adaptive, warmup_steps=warmup_steps,
      min_steps=min_steps, max_steps=num_steps if max_steps is None else max_steps,
      entropy_budget="after_warmup", model_keep_ratio="realised", guidance="threshold",
      stop_rule=refine.stop_when_input_complete, concat_conditions=concat_text, trace=trace,
      trace_probs=trace, trace_previews=trace_previews)


def loop_settings(spec: SamplerSpec, settings: T2IVSettings) -> SamplerSettings:
  """The loop's traced settings; fixed budgets get the exact float32 keep-ratio table."""
  settings = settings.as_arrays()
  table = None
  if not spec.adaptive:
    table = spec.schedule.exact_table(spec.num_steps, settings.snr_shift)
  return SamplerSettings(
      cfg_scale=settings.cfg_scale, cfg_low=settings.cfg_interval, cfg_high=1.0,
      temperature=settings.temperature, entropy_k=settings.entropy_k,
      entropy_b=settings.entropy_b, schedule_shift=settings.snr_shift, keep_table=table)


def row_keys(key: jax.Array, batch: int) -> jax.Array:
  """Keys [B]: fold_in(key, r) for row r of one key (raw uint32 [2] keys wrapped), or as given."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape[-1:] != (2,) or key.dtype != jnp.uint32:
      raise TypeError(f"key must be a jax.random.key (or raw uint32 [2] key data), got "
                      f"{key.dtype} {key.shape}.")
    key = jax.random.wrap_key_data(key)
  if key.ndim == 0:
    return jax.vmap(lambda r: jax.random.fold_in(key, r))(jnp.arange(batch))
  return refine.row_keys(key, batch)


def _as_replay(replay: Any) -> Replay | None:
  if replay is None or isinstance(replay, Replay):
    return replay
  if isinstance(replay, Mapping):
    return Replay(**{f: replay[f] for f in ("init_labels", "samples", "uniforms")})
  return Replay(replay.init_labels, replay.samples, replay.uniforms)


def _trace(raw: dict) -> T2IVTrace:
  bound = raw["pred"].shape[0]
  previews = None
  if "input_images" in raw:
    previews = dict(input_images=raw["input_images"], pred_images=raw["pred_images"])
  return T2IVTrace(inputs=raw["labels"][:bound], scale=raw["keep_ratio"],
                   probs=raw["probs"][..., 1], pred=raw["pred"], keep=raw["keep"],
                   entropy=raw["entropy"], active=raw["active"], previews=previews)


def _jitted(apply_fn: DenoiseApply, spec: SamplerSpec, decode_fn: Any):
  loop = refine.make_sampler(apply_fn, spec, decode_fn)

  def sample(params, text_cond, text_uncond, settings, key, replay=None, *, decode_params=None,
             fixed_labels=None, fixed_mask=None) -> T2IVOutput:
    """Samples one video (or image, T = 1) per row of text_cond (see make_sampler)."""
    cond = as_text_cache(text_cond)
    batch = cond.mask.shape[0]
    uncond = as_text_cache(text_uncond)
    uncond = pad_text(uncond, uncond.mask.shape[1], batch)
    out = loop(params, cond, uncond, row_keys(jnp.asarray(key), batch),
               loop_settings(spec, as_settings(settings)), decode_params,
               fixed_labels=fixed_labels, fixed_mask=fixed_mask, replay=_as_replay(replay))
    return T2IVOutput(
        labels=out.labels, latent=hbq.dequantize(out.labels, spec.hbq_rounds, "bit"),
        images=out.images, steps=out.steps, entropy=out.entropy, row_nfe=out.row_nfe,
        nfe=out.nfe, trace=_trace(out.trace) if spec.trace else None)

  return jax.jit(sample)


def _float32(value: Any) -> Any:
  """A host float32 scalar (abstract and traced values pass): Python floats, numpy and jax
  scalars all reach the jitted function with one dtype, so none of them recompiles."""
  if isinstance(value, (jax.ShapeDtypeStruct, jax.core.Tracer)):
    return value
  return np.asarray(value, np.float32)


class T2IVSampler:
  """The jitted sampler with its arguments normalised first (see make_sampler).

  `jitted` is the jax.jit function itself; `lower(...)` lowers it on the same (possibly
  abstract) arguments as a call.
  """

  def __init__(self, jitted):
    self.jitted = jitted

  @staticmethod
  def _arguments(settings, replay):
    settings = jax.tree.map(_float32, as_settings(settings))
    return settings, _as_replay(replay)

  def __call__(self, params, text_cond, text_uncond, settings, key, replay=None,
               **kwargs) -> T2IVOutput:
    settings, replay = self._arguments(settings, replay)
    return self.jitted(params, as_text_cache(text_cond), as_text_cache(text_uncond), settings,
                       key, replay, **kwargs)

  def lower(self, params, text_cond, text_uncond, settings, key, replay=None, **kwargs):
    settings, replay = self._arguments(settings, replay)
    return self.jitted.lower(params, as_text_cache(text_cond), as_text_cache(text_uncond),
                             settings, key, replay, **kwargs)

  def _cache_size(self) -> int:
    """Programs compiled so far (for tests that count compilations)."""
    return self.jitted._cache_size()  # pylint: disable=protected-access


def make_sampler(model: grn_t2iv.GRNT2IV, *, shape: tuple[int, int, int], h_div_w: float,
                 num_steps: int, schedule_steps: int, trace: bool = False,
                 adaptive: bool = False, warmup_steps: int = spec_lib.OFFICIAL_WARMUP_STEPS,
                 min_steps: int = 10, max_steps: int | None = None, decode_fn: Any = None,
                 trace_previews: bool = False, rules: tuple = ()):
  """The jitted T2I/T2V sampler of a GRNT2IV module for latent grids `shape` = (T, h, w).

  Args:
    model: the module (grn_jax.models.build_t2iv).
    shape: (latent frames, h, w); T = 1 for images.
    h_div_w: the aspect ratio; its nearest template sets the RoPE grid.
    num_steps: the most steps run (official max_infer_steps).
    schedule_steps: Tmax of the keep-ratio schedule (official complexity_aware_Tmax).
    trace: also return T2IVTrace.
    adaptive, warmup_steps, min_steps, max_steps: entropy-guided budgets (module docstring).
    decode_fn: None, or a hashable decode_fn(decode_params, latent [B, T, h, w, d]) run in the
      same program (e.g. tokenizer_io.Uint8Decode(tokenizer_io.TokenizerDecode(tokenizer))).
    trace_previews: with trace and decode_fn, decode every step's input and draw too.
    rules: logical axis rules (config.sharding_rules) for the model's sharding constraints.

  Returns:
    T2IVSampler, the jitted `sample(params, text_cond, text_uncond, settings, key, replay=None, *,
    decode_params=None, fixed_labels=None, fixed_mask=None) -> T2IVOutput`:
      text_cond: TextCache of B prompts (encode_text); text_uncond: of 1 or B prompts.
      settings: T2IVSettings or a dict of its fields (traced).
      key: one key (row r uses fold_in(key, r)) or keys [B].
      replay: None, or init_labels int32 [B, T, h, w, D], samples int32 [S, B, T, h, w, D] and
        uniforms float32 [S, B, T, h, w, D] (a Replay or a dict): they replace the initial
        random labels, step s's categorical draw and its keep uniforms (keep = uniform < t_next).
      fixed_labels, fixed_mask: int32 / bool [B, T, h, w, D], labels held as given (editing).
    Settings given as Python floats, numpy or jax scalars, a dict or T2IVSettings all reach
    one compiled program; calls of make_sampler with the same arguments return the same
    sampler (cached).
  """
  spec = sampler_spec(model, tuple(shape), num_steps, schedule_steps, trace, adaptive,
                      warmup_steps, min_steps, max_steps, trace_previews)
  return _sampler(DenoiseApply(model, float(h_div_w), tuple(rules)), spec, decode_fn)


@functools.lru_cache(maxsize=16)
def _sampler(apply_fn: DenoiseApply, spec: SamplerSpec, decode_fn: Any) -> T2IVSampler:
  return T2IVSampler(_jitted(apply_fn, spec, decode_fn))


@functools.lru_cache(maxsize=8)
def encode_text_fn(model: grn_t2iv.GRNT2IV, rules: tuple = ()):
  """jit((params, features float32 [B, L, text_dim], mask bool [B, L]) -> TextCache)."""

  def encode(params, features, mask):
    with nn.logical_axis_rules(rules):
      return model.apply({"params": params}, features, mask, method="encode_text")

  return jax.jit(encode)
