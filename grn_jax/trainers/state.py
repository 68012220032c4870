"""What every family trains with: TrainState, EMAs, the optimizer and its learning-rate schedule.

  tx = make_optimizer(config, num_examples, groups)   clip(global norm) -> AdamW, masked
  state = init_state(params, tx, num_emas)            EMAs start as copies of the parameters
  state, grad_norm = apply_gradients(state, grads, tx, config.train.ema_decays, groups)

Sections (their fields are TRAIN_FIELDS and OPTIM_FIELDS; defaults live in the config files):
  train   global_batch_size, num_epochs, total_steps, train_examples, ema_decays, ... (the
          periods and checkpoint options are read by grn_jax/trainers/loop.py)
  optim   blr (peak lr = blr * global_batch_size / 256 with lr_scaling 'linear', blr itself
          with 'none'), b1, b2, eps, weight_decay, grad_clip_norm, schedule (constant | cosine
          after a linear warm-up from warmup_init x the peak over warmup_steps steps, or
          warmup_epochs epochs when warmup_steps is 0), min_lr, warmup_hold_last (the official
          T2I/T2V trainer: its rate is only set while warming up, so after the warm-up it
          stays at the last warm-up value, 0.99005 x the peak for warmup_init 0.005 and 100
          steps)

What differs between families is data, not code: `ParamGroups` names the leaves that never move
(C2I: the fixed sin-cos `pos_embed`, official requires_grad=False) and the leaves without weight
decay besides every 1-D tensor (official: biases).
"""

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from grn_jax import config_check

TRAIN_FIELDS = ("global_batch_size", "num_epochs", "total_steps", "train_examples", "ema_decays",
                "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                "async_checkpointing", "init_from", "sample_every_steps", "eval_every_steps",
                "peak_flops_per_device", "resume_allow_changes")
OPTIM_FIELDS = ("blr", "lr_scaling", "b1", "b2", "weight_decay", "grad_clip_norm", "schedule",
                "warmup_epochs", "warmup_steps", "warmup_init", "warmup_hold_last", "min_lr",
                "eps")
SCHEDULES = ("constant", "cosine")
LR_SCALINGS = ("linear", "none")


@dataclasses.dataclass(frozen=True)
class ParamGroups:
  """Per-family parameter groups, by leaf name (the last key of a parameter's path).

  Attributes:
    frozen: leaves the optimizer never updates (zero update, zero gradient in the norm).
    no_decay: leaves without weight decay, in addition to every tensor of rank <= 1.
  """
  frozen: tuple[str, ...] = ()
  no_decay: tuple[str, ...] = ("bias",)


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `ema_params[i]` follows `config.train.ema_decays[i]`."""
  step: jnp.ndarray                  # int32 [], optimizer steps done
  params: Any
  opt_state: Any
  ema_params: tuple[Any, ...]


def check_sections(config: ml_collections.ConfigDict) -> None:
  """The fields and values of config.train and config.optim (errors name the field)."""
  config_check.check_fields(config.train, "train", TRAIN_FIELDS)
  config_check.check_fields(config.optim, "optim", OPTIM_FIELDS)
  train, optim = config.train, config.optim
  if train.global_batch_size < 1:
    raise ValueError(f"config.train.global_batch_size must be >= 1, got "
                     f"{train.global_batch_size}.")
  if train.total_steps <= 0 and not train.num_epochs > 0:
    raise ValueError(f"config.train.num_epochs={train.num_epochs} trains nothing: set it > 0 "
                     "(or config.train.total_steps > 0).")
  decays = tuple(train.ema_decays)
  if any(not 0.0 <= d < 1.0 for d in decays):
    raise ValueError(f"config.train.ema_decays must be values in [0, 1), got {decays}.")
  for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    if train[field] < 1:
      raise ValueError(f"config.train.{field} must be >= 1, got {train[field]}.")
  if not optim.blr > 0:
    raise ValueError(f"config.optim.blr must be > 0, got {optim.blr}.")
  config_check.check_choice("config.optim.schedule", optim.schedule, SCHEDULES)
  config_check.check_choice("config.optim.lr_scaling", optim.lr_scaling, LR_SCALINGS)
  if optim.warmup_steps < 0 or (optim.warmup_steps > 0 and optim.warmup_epochs > 0):
    raise ValueError(f"config.optim: give the warm-up in warmup_steps (>= 0, got "
                     f"{optim.warmup_steps}) or in warmup_epochs (got {optim.warmup_epochs}), "
                     "not both.")
  if not 0.0 <= optim.warmup_init < 1.0:
    raise ValueError(f"config.optim.warmup_init is the warm-up's first rate as a fraction of the "
                     f"peak, in [0, 1); got {optim.warmup_init}.")
  if optim.warmup_hold_last and (optim.schedule != "constant" or
                                 not (optim.warmup_steps or optim.warmup_epochs)):
    raise ValueError("config.optim.warmup_hold_last keeps the last warm-up rate: it needs a "
                     "warm-up (warmup_steps or warmup_epochs) and schedule='constant'.")


def steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int | None = None) -> int:
  """Optimizer steps per epoch (drop_last, as the official DistributedSampler loop).

  `num_examples` is the data set's size (default config.train.train_examples).
  """
  train = config.train
  examples = num_examples or train.train_examples
  steps = examples // train.global_batch_size
  if steps < 1:
    raise ValueError(f"config.train.global_batch_size={train.global_batch_size} exceeds the "
                     f"{examples} training examples.")
  return steps


def total_steps(config: ml_collections.ConfigDict, num_examples: int | None = None) -> int:
  """The run's length: config.train.total_steps if > 0, else num_epochs epochs."""
  if config.train.total_steps > 0:
    return int(config.train.total_steps)
  return int(config.train.num_epochs * steps_per_epoch(config, num_examples))


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """blr * global_batch_size / 256 (lr_scaling 'linear', C2I) or blr ('none', T2I/T2V)."""
  optim = config.optim
  if optim.lr_scaling == "linear":
    return optim.blr * config.train.global_batch_size / 256
  return float(optim.blr)


def learning_rate_fn(config: ml_collections.ConfigDict,
                     num_examples: int | None = None) -> optax.Schedule:
  """lr(step): linear warm-up from warmup_init x peak over warmup_steps (or warmup_epochs), then
  constant (the peak, or with warmup_hold_last the last warm-up rate) or half-cosine.

  The peak is `peak_learning_rate`; the cosine reaches min_lr after num_epochs epochs (a run cut
  short by train.total_steps keeps the schedule of the whole run).
  """
  optim = config.optim
  peak = peak_learning_rate(config)
  per_epoch = steps_per_epoch(config, num_examples)
  warmup = int(optim.warmup_steps) or max(int(round(optim.warmup_epochs * per_epoch)), 0)
  total = config.train.num_epochs * per_epoch
  if optim.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif optim.schedule == "cosine":
    span = max(total - warmup, 1)
    after = lambda s: optim.min_lr + (peak - optim.min_lr) * 0.5 * (
        1.0 + jnp.cos(jnp.pi * jnp.minimum(s, span) / span))
  else:
    raise ValueError(f"config.optim.schedule must be one of {SCHEDULES}, got "
                     f"{optim.schedule!r}.")
  if warmup == 0:
    return after
  start = optim.warmup_init * peak
  if optim.warmup_hold_last:
    after = optax.constant_schedule(start + (peak - start) * (warmup - 1) / warmup)
  return optax.join_schedules([optax.linear_schedule(start, peak, warmup), after], [warmup])


def _leaf_name(path) -> str:
  """The last key name of a tree path; the `value` field of flax's partitioning boxes is
  skipped."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  return [n for n in names if n != "value"][-1]


def trainable_mask(params, frozen: tuple[str, ...]) -> Any:
  """True for the parameters the optimizer updates (every leaf not named in `frozen`)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) not in frozen, params)


def weight_decay_mask(params, no_decay: tuple[str, ...]) -> Any:
  """True for decayed parameters: rank >= 2 and not named in `no_decay`."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x.ndim > 1 and _leaf_name(p) not in no_decay, params)


def make_optimizer(config: ml_collections.ConfigDict, num_examples: int | None = None,
                   groups: ParamGroups = ParamGroups()) -> optax.GradientTransformation:
  """Clip(global norm) -> AdamW(learning_rate_fn) on trainable params; frozen ones get zeros.

  `num_examples` sets the epoch length of the schedule (default config.train.train_examples).
  """
  optim = config.optim
  chain = []
  if optim.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_fn(config, num_examples), b1=optim.b1, b2=optim.b2,
                           eps=optim.eps, weight_decay=optim.weight_decay,
                           mask=lambda p: weight_decay_mask(p, groups.no_decay)))
  labels = lambda params: jax.tree.map(lambda t: "train" if t else "frozen",
                                       trainable_mask(params, groups.frozen))
  return optax.multi_transform({"train": optax.chain(*chain), "frozen": optax.set_to_zero()},
                               labels)


def init_state(params, tx: optax.GradientTransformation, num_emas: int) -> TrainState:
  """Step 0; EMAs start as copies of the initial parameters (official `deepcopy`)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=tuple(jax.tree.map(jnp.copy, params) for _ in range(num_emas)))


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation,
                    ema_decays: tuple[float, ...], groups: ParamGroups
                    ) -> tuple[TrainState, jnp.ndarray]:
  """One optimizer step and the EMA updates `ema <- d * ema + (1 - d) * new params`.

  Returns:
    (the state of step + 1, float32 [] global norm of the gradients of trainable params).
  """
  mask = trainable_mask(grads, groups.frozen)
  grads = jax.tree.map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  emas = tuple(jax.tree.map(lambda e, p, d=decay: d * e + (1.0 - d) * p, ema, params)
               for ema, decay in zip(state.ema_params, ema_decays))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=emas)
  return new_state, grad_norm
