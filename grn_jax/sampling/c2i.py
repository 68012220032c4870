"""The class-to-image adapter of the refinement sampler: class labels, the null class, config.

  out = sample(config, params, class_labels, key)                 # labels [B, h, w, D], steps
  out = sample(config, params, class_labels, key, decode=(TokenizerDecode(tok), tok_params))
  labels, steps = sample_labels(config, params, class_labels, key, adaptive=False)
  out = sample(config, params, class_labels, key, trace=True)     # out.trace: every step
  images = sample_grid_fn(config, params)                          # for the trainer's hook
  family = C2IGeneration(config)                                   # for sampling/generate.py

The conditioning of a row is its class label (int32 [B]); the unconditional counterpart is the
null class `config.model.num_classes` (the official label-drop class). `config.sample` holds the
settings (see configs/c2i.py): static fields (steps, schedule, keep mode, adaptive bounds)
select the compiled program; guidance, temperature, k, b and the schedule shift are traced.
"""

import dataclasses
import functools
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import checkpointing
from grn_jax import config_check
from grn_jax import hbq
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.models import build_c2i
from grn_jax.sampling import outputs
from grn_jax.sampling import refine
from grn_jax.sampling import schedules
from grn_jax.sampling.spec import SamplerSettings, SamplerSpec, SampleOutput

SAMPLE_FIELDS = ("num_steps", "cfg_scale", "cfg_interval", "temperature", "schedule",
                 "schedule_shift", "keep_mode", "adaptive", "warmup_steps", "min_steps",
                 "max_steps", "entropy_k", "entropy_b", "entropy_budget", "params", "checkpoint",
                 "seed", "per_class", "num_images", "batch_size", "output_dir", "write_npz")
CLASS_KEY = "grn_class"  # the PNG text chunk (and samples.npz `labels`) of an image's class


@dataclasses.dataclass(frozen=True)
class ModelApply:
  """Hashable `apply_fn(params, labels, keep_ratio, class_labels)` of a flax module.

  `rules` (logical axis -> mesh axes, as config.sharding_rules) activates the module's logical
  sharding constraints; with none they are no-ops.
  """
  module: Any
  rules: tuple = ()

  def __call__(self, params, labels, keep_ratio, class_labels):
    if not self.rules:
      return self.module.apply({"params": params}, labels, keep_ratio, class_labels)
    with nn.logical_axis_rules(self.rules):
      return self.module.apply({"params": params}, labels, keep_ratio, class_labels)


def settings_from_config(sample_cfg: ml_collections.ConfigDict) -> SamplerSettings:
  """The traced sampler settings of config.sample."""
  low, high = sample_cfg.cfg_interval
  return SamplerSettings(
      cfg_scale=float(sample_cfg.cfg_scale), cfg_low=float(low), cfg_high=float(high),
      temperature=float(sample_cfg.temperature),
      entropy_k=float(sample_cfg.entropy_k), entropy_b=float(sample_cfg.entropy_b),
      schedule_shift=float(sample_cfg.schedule_shift))


def spec_from_config(config: ml_collections.ConfigDict, adaptive: bool | None = None,
                     trace: bool = False, trace_previews: bool = False) -> SamplerSpec:
  """The static sampler structure of a config (errors name the offending field)."""
  model, sample_cfg = config.model, config.sample
  config_check.check_fields(sample_cfg, "sample", SAMPLE_FIELDS)
  if sample_cfg.temperature <= 0:
    raise ValueError(f"config.sample.temperature must be > 0, got {sample_cfg.temperature}.")
  if len(tuple(sample_cfg.cfg_interval)) != 2:
    raise ValueError("config.sample.cfg_interval must be (low, high).")
  low, high = sample_cfg.cfg_interval
  if low >= 0 and not low <= high <= 1.0:
    raise ValueError(f"config.sample.cfg_interval=({low}, {high}) must satisfy low <= high <= 1 "
                     "(guidance where the time lies in (low, high); a low < 0 selects power-cos "
                     "guidance).")
  if not sample_cfg.cfg_scale >= 0:
    raise ValueError(f"config.sample.cfg_scale must be >= 0 (1: no guidance), got "
                     f"{sample_cfg.cfg_scale}.")
  for field in ("batch_size", "per_class", "num_steps"):
    if not sample_cfg[field] >= 1:
      raise ValueError(f"config.sample.{field} must be >= 1, got {sample_cfg[field]}.")
  dim = hbq.num_labels(model.latent_dim, model.hbq_rounds, model.label_mode)
  return SamplerSpec(
      label_shape=(model.input_size, model.input_size, dim),
      label_values=hbq.num_classes(model.hbq_rounds, model.label_mode),
      hbq_rounds=model.hbq_rounds, label_mode=model.label_mode,
      num_steps=int(sample_cfg.num_steps), schedule=schedules.Schedule(kind=sample_cfg.schedule),
      adaptive=bool(sample_cfg.adaptive if adaptive is None else adaptive),
      warmup_steps=int(sample_cfg.warmup_steps), min_steps=int(sample_cfg.min_steps),
      max_steps=int(sample_cfg.max_steps), entropy_budget=sample_cfg.entropy_budget,
      keep_mode=sample_cfg.keep_mode, trace=trace, trace_previews=trace_previews)


@functools.lru_cache(maxsize=8)
def _model_apply(model_json: str, rules: tuple) -> ModelApply:
  return ModelApply(build_c2i(ml_collections.ConfigDict(json.loads(model_json))), rules)


def model_apply(config: ml_collections.ConfigDict) -> ModelApply:
  """The (cached, hashable) apply_fn of config.model with config.sharding_rules."""
  rules = sharding.rules_from_config(config.sharding_rules)
  return _model_apply(config.model.to_json(), tuple(rules))


def null_labels(class_labels: jax.Array, num_classes: int) -> jax.Array:
  """The unconditional counterpart of class labels int32 [B]: the null class everywhere."""
  return jnp.full_like(class_labels, num_classes)


@dataclasses.dataclass(frozen=True)
class ClassRows:
  """Hashable fn(params, class_labels [B], keys [B], settings, decode_params, *, fixed_labels,
  fixed_mask) -> SampleOutput: the loop with the classes and the null class."""
  apply_fn: ModelApply
  spec: SamplerSpec
  num_classes: int
  decode_fn: Any = None

  def __call__(self, params, class_labels, keys, settings, decode_params=None, *,
               fixed_labels=None, fixed_mask=None) -> SampleOutput:
    sampler = refine.jitted_sampler(self.apply_fn, self.spec, self.decode_fn)
    return sampler(params, class_labels, null_labels(class_labels, self.num_classes), keys,
                   settings, decode_params, fixed_labels=fixed_labels, fixed_mask=fixed_mask)


def sample(config: ml_collections.ConfigDict, params: Any, class_labels, key,
           adaptive: bool | None = None, settings: SamplerSettings | None = None,
           trace: bool = False, decode: tuple[Any, Any] | None = None,
           trace_previews: bool = False, fixed_labels=None, fixed_mask=None) -> SampleOutput:
  """The full SampleOutput of config's sampler for class_labels int [B].

  Args:
    config: the full config (model, sample, sharding_rules).
    params: GRN params.
    class_labels: int [B] (may be batch-sharded).
    key: one typed PRNG key (split per row) or keys [B].
    adaptive: overrides config.sample.adaptive.
    settings: overrides settings_from_config(config.sample).
    trace, trace_previews: see SamplerSpec.
    decode: (decode_fn, decode_params) or None; decode_fn(params, latent) -> images.
    fixed_labels, fixed_mask: labels held as given, int32 / bool [B, h, w, D] (inpainting,
      outpainting).
  """
  spec = spec_from_config(config, adaptive, trace=trace, trace_previews=trace_previews)
  decode_fn, decode_params = decode if decode is not None else (None, None)
  rows = ClassRows(model_apply(config), spec, int(config.model.num_classes), decode_fn)
  class_labels = refine.shard_batch(jnp.asarray(class_labels, jnp.int32))
  return rows(params, class_labels, refine.row_keys(key, class_labels.shape[0]),
              settings or settings_from_config(config.sample), decode_params,
              fixed_labels=fixed_labels, fixed_mask=fixed_mask)


def sample_labels(config: ml_collections.ConfigDict, params: Any, class_labels, key,
                  adaptive: bool | None = None, settings: SamplerSettings | None = None):
  """Samples HBQ labels for class_labels int [B]: (labels int32 [B, h, w, D], steps int32 [B])."""
  out = sample(config, params, class_labels, key, adaptive=adaptive, settings=settings)
  return out.labels, out.steps


def sample_grid_fn(config: ml_collections.ConfigDict, params: Any,
                   per_class: int = 4) -> np.ndarray:
  """A class grid for training-time previews: images [classes * per_class, H, W, 3] in [-1, 1].

  Decodes with the tokenizer of config.tokenizer (tokenizer_io.load_tokenizer: a clear error if
  it has no weights).
  """
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  classes = min(int(config.model.num_classes), 10)
  class_labels = np.repeat(np.arange(classes, dtype=np.int32), per_class)
  out = sample(config, params, class_labels, jax.random.key(0),
               decode=(tokenizer_io.TokenizerDecode(tok_module), tok_params))
  return np.asarray(out.images)


def class_schedule(num_classes: int, per_class: int, num_images: int = -1) -> np.ndarray:
  """Class of every output index: [0]*per_class + [1]*per_class + ... (int32 [N])."""
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  return labels[:num_images] if num_images > 0 else labels


class C2IGeneration:
  """The C2I family of sampling/generate.py: index i is an image of class_schedule(...)[i].

  The sampler spec, the settings and the model (module and apply) are built once here.
  """

  npz_fields = {"labels": CLASS_KEY}
  writer = outputs.PngWriter()

  def __init__(self, config: ml_collections.ConfigDict, adaptive: bool | None = None):
    self.config = config
    self.spec = spec_from_config(config, adaptive)
    self.settings = settings_from_config(config.sample)
    self.apply_fn = model_apply(config)
    sample_cfg = config.sample
    self.class_labels = class_schedule(int(config.model.num_classes), int(sample_cfg.per_class),
                                       int(sample_cfg.num_images))
    self.num_outputs = len(self.class_labels)

  def conditions(self, indices: np.ndarray) -> np.ndarray:
    """Class labels int32 [B] of output indices [B] (all < num_outputs)."""
    return self.class_labels[indices]

  def rows_fn(self, decode_fn: Any) -> ClassRows:
    return ClassRows(self.apply_fn, self.spec, int(self.config.model.num_classes), decode_fn)

  def metadata(self, index: int) -> dict[str, int]:
    return {CLASS_KEY: int(self.class_labels[index])}

  def abstract_params(self, mesh) -> Any:
    """GRN params as ShapeDtypeStructs sharded by config.sharding_rules on the mesh."""
    size = self.config.model.input_size
    abstract = jax.eval_shape(
        self.apply_fn.module.init, jax.random.key(0),
        jax.ShapeDtypeStruct((1, size, size, self.spec.label_shape[-1]), jnp.int32),
        jax.ShapeDtypeStruct((1,), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32))
    shardings = sharding.logical_shardings(abstract, mesh, self.config.sharding_rules)["params"]
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        nn.unbox(abstract)["params"], shardings)

  def place_params(self, params: Any, mesh) -> Any:
    """GRN params on the mesh, sharded by config.sharding_rules (tree checked against the model)."""
    abstract = self.abstract_params(mesh)
    checkpointing.check_tree_matches(params, abstract, what="GRN params")
    return jax.device_put(params, jax.tree.map(lambda x: x.sharding, abstract))

  def record(self) -> dict[str, Any]:
    """What the generated files depend on besides the params: the model and sampler settings."""
    sample_cfg = {k: self.config.sample[k] for k in SAMPLE_FIELDS
                  if k not in ("output_dir", "write_npz", "batch_size", "checkpoint")}
    sample_cfg["adaptive"] = self.spec.adaptive
    return dict(task="c2i", model=self.config.model.to_dict(), sample=sample_cfg)
