"""C2I training state, optimiser and the pure train step (official recipe, GRN-SPEC §E.1).

One step on a batch of clean HBQ labels:
  keep_ratio t ~ sigmoid(N(keep_logit_mean, keep_logit_std))   one per example (official `t`,
                                                               P_mean, P_std)
  keep mask   ~ Bernoulli(t) per label element; the others get uniform random labels
  class label -> null class (index num_classes) with probability label_drop_prob
  loss        = cross-entropy over every label element (kept and random alike), float32
  AdamW(b1, b2) with lr = blr * global_batch / 256, linear warm-up then constant or cosine,
  global-norm clipping; the fixed `pos_embed` is never updated; two EMAs of all parameters.

Randomness comes from fold_in(key(seed), step), so a resumed run draws the same numbers, and
(with partitionable threefry) the same numbers on any mesh.
"""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from grn_jax import hbq

NUM_KEEP_BINS = 10  # accuracy per keep-ratio decile, as the official logs
FROZEN_PARAMS = ("pos_embed",)  # fixed sin-cos table (requires_grad=False in the official code)


@flax.struct.dataclass
class TrainState:
  """Everything a step changes. `ema_params[i]` follows `config.train.ema_decays[i]`."""
  step: jnp.ndarray                  # int32 []
  params: Any
  opt_state: Any
  ema_params: tuple[Any, ...]


def steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int | None = None) -> int:
  """Optimizer steps per epoch (drop_last, as the official DistributedSampler loop)."""
  train = config.train
  examples = num_examples or train.train_examples
  steps = examples // train.global_batch_size
  if steps < 1:
    raise ValueError(f"config.train.global_batch_size={train.global_batch_size} exceeds the "
                     f"{examples} training examples.")
  return steps


def learning_rate_fn(config: ml_collections.ConfigDict,
                     num_examples: int | None = None) -> optax.Schedule:
  """lr(step): linear warm-up from 0 over warmup_epochs, then constant or half-cosine."""
  optim = config.optim
  peak = optim.blr * config.train.global_batch_size / 256
  per_epoch = steps_per_epoch(config, num_examples)
  warmup = max(int(round(optim.warmup_epochs * per_epoch)), 0)
  total = config.train.num_epochs * per_epoch
  if optim.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif optim.schedule == "cosine":
    span = max(total - warmup, 1)
    after = lambda s: optim.min_lr + (peak - optim.min_lr) * 0.5 * (
        1.0 + jnp.cos(jnp.pi * jnp.minimum(s, span) / span))
  else:
    raise ValueError(f"config.optim.schedule must be 'constant' or 'cosine', got "
                     f"{optim.schedule!r}.")
  if warmup == 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def _path_names(path) -> tuple[str, ...]:
  """Key names of a tree path; the `value` field of flax's partitioning boxes is skipped."""
  names = tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)
  return tuple(n for n in names if n != "value")


def trainable_mask(params) -> Any:
  """True for parameters the optimizer updates (everything except FROZEN_PARAMS)."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: _path_names(p)[-1] not in FROZEN_PARAMS, params)


def weight_decay_mask(params) -> Any:
  """Official no-decay group: 1-D parameters and biases."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: x.ndim > 1 and _path_names(p)[-1] != "bias", params)


def make_optimizer(config: ml_collections.ConfigDict,
                   num_examples: int | None = None) -> optax.GradientTransformation:
  """Clip(global norm) -> AdamW on trainable params; frozen params get zero updates.

  `num_examples` sets the epoch length of the schedule (default config.train.train_examples).
  """
  optim = config.optim
  chain = []
  if optim.grad_clip_norm and optim.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(optim.grad_clip_norm))
  chain.append(optax.adamw(learning_rate_fn(config, num_examples), b1=optim.b1, b2=optim.b2,
                           eps=optim.eps, weight_decay=optim.weight_decay,
                           mask=weight_decay_mask))
  labels = lambda params: jax.tree.map(lambda t: "train" if t else "frozen",
                                       trainable_mask(params))
  return optax.multi_transform({"train": optax.chain(*chain), "frozen": optax.set_to_zero()},
                               labels)


def init_state(params, tx: optax.GradientTransformation, num_emas: int) -> TrainState:
  """EMAs start as copies of the initial parameters (official `ema_params = deepcopy`)."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    ema_params=tuple(jax.tree.map(jnp.copy, params) for _ in range(num_emas)))


def corrupt(key: jax.Array, labels: jnp.ndarray, class_labels: jnp.ndarray, *, num_label_classes: int,
            num_classes: int, p_mean: float, p_std: float, label_drop_prob: float):
  """Official training corruption.

  Args:
    key: PRNG key of this step.
    labels: int32 [B, h, w, D] clean HBQ labels.
    class_labels: int32 [B] in [0, num_classes).
    num_label_classes: K, classes per label element.
    num_classes: image classes; index num_classes is the null class.
    p_mean, p_std: keep ratio t = sigmoid(N(p_mean, p_std^2)).
    label_drop_prob: probability of replacing a class by the null class.

  Returns:
    (inputs int32 [B, h, w, D], keep_ratio float32 [B], dropped class labels int32 [B]).
  """
  k_t, k_rand, k_mask, k_drop = jax.random.split(key, 4)
  batch = labels.shape[0]
  keep_ratio = jax.nn.sigmoid(p_mean + p_std * jax.random.normal(k_t, (batch,), jnp.float32))
  random_labels = jax.random.randint(k_rand, labels.shape, 0, num_label_classes, jnp.int32)
  keep = jax.random.uniform(k_mask, labels.shape) < keep_ratio[:, None, None, None]
  inputs = jnp.where(keep, labels, random_labels)
  drop = jax.random.uniform(k_drop, (batch,)) < label_drop_prob
  class_labels = jnp.where(drop, num_classes, class_labels).astype(jnp.int32)
  return inputs, keep_ratio, class_labels


def cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Per-element CE in float32. logits [..., K], targets int [...] -> float32 [...]."""
  logits = logits.astype(jnp.float32)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - target_logit


def keep_ratio_bins(keep_ratio: jnp.ndarray) -> jnp.ndarray:
  """Official decile index min(int(t / 0.1), 9). float [B] -> int32 [B]."""
  return jnp.minimum(jnp.floor(keep_ratio / 0.1), NUM_KEEP_BINS - 1).astype(jnp.int32)


def train_step(state: TrainState, batch: dict[str, jnp.ndarray], *, apply_fn: Callable,
               tx: optax.GradientTransformation, lr_fn: optax.Schedule,
               config: ml_collections.ConfigDict, base_key: jax.Array) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """One optimizer step. Pure; jit it with shardings and donate `state`.

  Args:
    state: the TrainState.
    batch: {'labels': int32 [B, h, w, D], 'class_labels': int32 [B]}.
    apply_fn: (params, labels, keep_ratio, class_labels) -> logits float32 [B, h, w, D, K].
    tx: from `make_optimizer`.
    lr_fn: the schedule inside `tx` (reported as the `lr` metric).
    config: the full config (model, corruption, train.ema_decays).
    base_key: key(config.seed); the step key is fold_in(base_key, state.step).

  Returns:
    (new state, metrics): metrics hold scalars `loss`, `accuracy`, `grad_norm`, `lr` and the
    per-decile sums `bin_correct` float32 [10] (sum of per-example accuracies) and
    `bin_count` float32 [10], which the host turns into accuracies (as the official all-reduce).
  """
  model_cfg, corruption = config.model, config.corruption
  num_label_classes = hbq.num_classes(model_cfg.hbq_rounds, model_cfg.label_mode)
  key = jax.random.fold_in(base_key, state.step)
  labels = batch["labels"]
  inputs, keep_ratio, class_labels = corrupt(
      key, labels, batch["class_labels"], num_label_classes=num_label_classes,
      num_classes=model_cfg.num_classes, p_mean=corruption.keep_logit_mean,
      p_std=corruption.keep_logit_std, label_drop_prob=corruption.label_drop_prob)

  def loss_fn(params):
    logits = apply_fn(params, inputs, keep_ratio, class_labels)
    loss = jnp.mean(cross_entropy(logits, labels))
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  mask = trainable_mask(grads)
  grads = jax.tree.map(lambda g, m: g if m else jnp.zeros_like(g), grads, mask)
  grad_norm = optax.tree.norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  emas = tuple(
      jax.tree.map(lambda e, p, d=decay: d * e + (1.0 - d) * p, ema, params)
      for ema, decay in zip(state.ema_params, config.train.ema_decays))

  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  per_example = jnp.mean(correct, axis=(1, 2, 3))
  onehot_bins = jax.nn.one_hot(keep_ratio_bins(keep_ratio), NUM_KEEP_BINS, dtype=jnp.float32)
  lr = lr_fn(state.step)
  metrics = dict(loss=loss, accuracy=jnp.mean(per_example), grad_norm=grad_norm,
                 lr=jnp.asarray(lr, jnp.float32),
                 bin_correct=per_example @ onehot_bins, bin_count=jnp.sum(onehot_bins, axis=0))
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=emas)
  return new_state, metrics

