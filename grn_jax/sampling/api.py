"""Config-level sampling: build the jitted sampler of a config once and call it per batch.

  labels, steps = sample_labels(config, params, class_labels, key, adaptive=False)
  frames = sample_trajectory(config, params, class_labels, key)   # [steps + 1, B, h, w, D]
  images = sample_grid_fn(config, params)                          # for the trainer's hook

Decoding (`decode=(decode_fn, tokenizer params)`) uses grn_jax.tokenizer_io.TokenizerDecode.

`config.sample` holds the settings (see configs/c2i.py). Static fields (steps, schedule, keep
mode, adaptive bounds) select the compiled program; guidance, temperature, k, b and the schedule
shift are traced.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax import hbq
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.models import build_c2i
from grn_jax.sampling import refine

SAMPLE_FIELDS = ("num_steps", "cfg_scale", "cfg_interval", "temperature", "schedule",
                 "schedule_shift", "keep_mode", "adaptive", "warmup_steps", "min_steps",
                 "max_steps", "entropy_k", "entropy_b", "entropy_budget", "params", "checkpoint",
                 "seed", "per_class", "num_images", "batch_size", "output_dir", "write_npz")


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


def settings_from_config(sample_cfg: ml_collections.ConfigDict) -> refine.SamplerSettings:
  """The traced sampler settings of config.sample."""
  low, high = sample_cfg.cfg_interval
  return refine.SamplerSettings(
      cfg_scale=float(sample_cfg.cfg_scale), cfg_low=float(low), cfg_high=float(high),
      temperature=float(sample_cfg.temperature),
      entropy_k=float(sample_cfg.entropy_k), entropy_b=float(sample_cfg.entropy_b),
      schedule_shift=float(sample_cfg.schedule_shift))


def spec_from_config(config: ml_collections.ConfigDict, adaptive: bool | None = None,
                     trace: bool = False, trace_previews: bool = False) -> refine.SamplerSpec:
  """The static sampler structure of a config (errors name the offending field)."""
  model, sample = config.model, config.sample
  config_check.check_fields(sample, "sample", SAMPLE_FIELDS)
  if sample.temperature <= 0:
    raise ValueError(f"config.sample.temperature must be > 0, got {sample.temperature}.")
  if len(tuple(sample.cfg_interval)) != 2:
    raise ValueError("config.sample.cfg_interval must be (low, high).")
  dim = hbq.num_labels(model.latent_dim, model.hbq_rounds, model.label_mode)
  return refine.SamplerSpec(
      label_shape=(model.input_size, model.input_size, dim),
      label_classes=hbq.num_classes(model.hbq_rounds, model.label_mode),
      null_class=model.num_classes, hbq_rounds=model.hbq_rounds, label_mode=model.label_mode,
      num_steps=int(sample.num_steps), schedule=sample.schedule,
      adaptive=bool(sample.adaptive if adaptive is None else adaptive),
      warmup_steps=int(sample.warmup_steps), min_steps=int(sample.min_steps),
      max_steps=int(sample.max_steps), entropy_budget=sample.entropy_budget,
      keep_mode=sample.keep_mode, trace=trace, trace_previews=trace_previews)


@functools.lru_cache(maxsize=8)
def _model_apply(model_json: str, rules: tuple) -> ModelApply:
  return ModelApply(build_c2i(ml_collections.ConfigDict(_loads(model_json))), rules)


def _loads(text: str) -> dict:
  import json  # pylint: disable=g-import-not-at-top
  return json.loads(text)


def model_apply(config: ml_collections.ConfigDict) -> ModelApply:
  """The (cached, hashable) apply_fn of config.model with config.sharding_rules."""
  rules = sharding.rules_from_config(config.sharding_rules)
  return _model_apply(config.model.to_json(), tuple(rules))


def sample_labels(config: ml_collections.ConfigDict, params: Any, class_labels, key,
                  adaptive: bool | None = None, settings: refine.SamplerSettings | None = None):
  """Samples HBQ labels for class_labels int [B]: (labels int32 [B, h, w, D], steps int32 [B])."""
  out = sample(config, params, class_labels, key, adaptive=adaptive, settings=settings)
  return out.labels, out.steps


def sample(config: ml_collections.ConfigDict, params: Any, class_labels, key,
           adaptive: bool | None = None, settings: refine.SamplerSettings | None = None,
           trace: bool = False, decode: tuple[Any, Any] | None = None,
           trace_previews: bool = False) -> refine.SampleOutput:
  """The full SampleOutput of config's sampler (decode = (decode_fn, decode_params) or None)."""
  spec = spec_from_config(config, adaptive, trace=trace, trace_previews=trace_previews)
  decode_fn, decode_params = decode if decode is not None else (None, None)
  sampler = refine.jitted_sampler(model_apply(config), spec, decode_fn)
  return sampler(params, jnp.asarray(class_labels, jnp.int32), key,
                 settings or settings_from_config(config.sample), decode_params)


def sample_trajectory(config: ml_collections.ConfigDict, params: Any, class_labels, key,
                      adaptive: bool | None = None) -> np.ndarray:
  """The network input after every step: int32 [bound + 1, B, h, w, D] (frame 0 = random).

  Rows that finish early repeat their final labels; the last frame is each row's final sample
  (with the official t_next = 1 at the last step, the last input is the final sample).
  """
  out = sample(config, params, class_labels, key, adaptive=adaptive, trace=True)
  frames = np.array(out.trace["labels"])
  steps = np.asarray(out.steps)
  for row, used in enumerate(steps):  # freeze finished rows on their final labels
    frames[used + 1:, row] = frames[used, row]
  return frames


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
