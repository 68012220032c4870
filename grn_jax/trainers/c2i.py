"""Class-to-image GRN training, a task of grn_jax/trainers/loop.py (official recipe, GRN-SPEC §E.1).

  python -m grn_jax.main --mode=train --config=configs/c2i.py:variant=B --workdir=DIR

One step on a batch of clean HBQ labels:
  keep_ratio t ~ sigmoid(N(keep_logit_mean, keep_logit_std))   one per example (official `t`,
                                                               P_mean, P_std)
  keep mask   ~ Bernoulli(t) per label element; the others get uniform random labels
  class label -> null class (index num_classes) with probability label_drop_prob
  loss        = cross-entropy over every label element (kept and random alike), float32
  AdamW(b1, b2) with lr = blr * global_batch / 256, linear warm-up then constant or cosine,
  global-norm clipping; the fixed `pos_embed` is never updated; two EMAs of all parameters
  (grn_jax/trainers/state.py).
Metrics: loss, accuracy (argmax == clean label) and the accuracy per keep-ratio decile, as the
official logs.

Input (grn_jax/data/pipeline.py): pre-tokenized labels (label_shards, synthetic, or in memory
with config.data.source = 'arrays' and `dataset=(labels int32 [N, h, w, D], class_labels int32
[N])`), or images (tfds, folder) tokenized on the fly by the frozen HBQ tokenizer.
"""

from typing import Any, Callable, Sequence

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax import evaluation
from grn_jax import flops
from grn_jax import hbq
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.data import online_tokenizer
from grn_jax.data import pipeline
from grn_jax.models import build_c2i
from grn_jax.models import tokenizer as tokenizer_model
from grn_jax.models import validate_model_config
from grn_jax.sampling import c2i as c2i_sampling
from grn_jax.trainers import state as state_lib
from grn_jax.trainers import task as task_lib
from grn_jax.trainers.metrics import KeepRatioAccuracy, cross_entropy

CONFIG_FIELDS = ("task", "mode", "seed", "model", "tokenizer", "data", "train", "optim",
                 "corruption", "sample", "eval", "mesh", "sharding_rules")
CORRUPTION_FIELDS = ("keep_logit_mean", "keep_logit_std", "label_drop_prob")
# The fixed sin-cos table never moves (requires_grad=False in the official code); no weight
# decay on 1-D tensors and biases.
PARAM_GROUPS = state_lib.ParamGroups(frozen=("pos_embed",), no_decay=("bias",))


def validate_config(config: ml_collections.ConfigDict, extra_sections: Sequence[str] = ()) -> None:
  """A whole C2I config: its top-level fields and every section's (errors name the field).

  Args:
    config: a configs/c2i.py-style config (task 'c2i').
    extra_sections: top-level sections a config may add (the demo's), checked by their readers.
  """
  config_check.check_fields(config, "", CONFIG_FIELDS, optional=extra_sections)
  if config.task != "c2i":
    raise ValueError(f"config.task={config.task!r}: this is the check of a C2I config (task "
                     "'c2i').")
  validate_model_config(config.model)
  tokenizer_model.validate_tokenizer_config(config.tokenizer)
  config_check.check_fields(config.data, "data", pipeline.DATA_FIELDS)
  state_lib.check_sections(config)
  config_check.check_fields(config.corruption, "corruption", CORRUPTION_FIELDS)
  config_check.check_fields(config.sample, "sample", c2i_sampling.SAMPLE_FIELDS)
  config_check.check_fields(config.eval, "eval", evaluation.EVAL_FIELDS)
  config_check.check_fields(config.mesh, "mesh", sharding.MESH_AXES)
  sharding.rules_from_config(config.sharding_rules)
  corruption, decays = config.corruption, tuple(config.train.ema_decays)
  if not decays:
    raise ValueError("config.train.ema_decays must name at least one EMA (config.sample.params "
                     "samples from them).")
  if not 0.0 <= corruption.label_drop_prob <= 1.0:
    raise ValueError(f"config.corruption.label_drop_prob must lie in [0, 1], got "
                     f"{corruption.label_drop_prob}.")
  if corruption.keep_logit_std < 0:
    raise ValueError(f"config.corruption.keep_logit_std must be >= 0, got "
                     f"{corruption.keep_logit_std}.")
  params_name = config.sample.params
  if params_name != "params" and not (params_name.startswith("ema_") and
                                      params_name[4:].isdigit() and
                                      int(params_name[4:]) < len(decays)):
    raise ValueError(f"config.sample.params must be 'params' or ema_0..ema_{len(decays) - 1}, "
                     f"got {params_name!r}.")


def corrupt(key: jax.Array, labels: jnp.ndarray, class_labels: jnp.ndarray, *,
            num_label_classes: int, num_classes: int, p_mean: float, p_std: float,
            label_drop_prob: float):
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


def train_loss(params: Any, batch: dict[str, jnp.ndarray], key: jax.Array, *,
               apply_fn: Callable, config: ml_collections.ConfigDict
               ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The official loss of one batch. Pure.

  Args:
    params: the model parameters.
    batch: {'labels': int32 [B, h, w, D], 'class_labels': int32 [B]}.
    key: this step's key (fold_in(key(seed), step)).
    apply_fn: (params, labels, keep_ratio, class_labels) -> logits float32 [B, h, w, D, K].
    config: the full config (model, corruption).

  Returns:
    (float32 [] mean cross-entropy, outputs: `accuracy` float32 [], `per_example_accuracy`
    float32 [B], `keep_ratio` float32 [B]).
  """
  model_cfg, corruption = config.model, config.corruption
  labels = batch["labels"]
  inputs, keep_ratio, class_labels = corrupt(
      key, labels, batch["class_labels"],
      num_label_classes=hbq.num_classes(model_cfg.hbq_rounds, model_cfg.label_mode),
      num_classes=model_cfg.num_classes, p_mean=corruption.keep_logit_mean,
      p_std=corruption.keep_logit_std, label_drop_prob=corruption.label_drop_prob)
  logits = apply_fn(params, inputs, keep_ratio, class_labels)
  loss = jnp.mean(cross_entropy(logits, labels))
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  per_example = jnp.mean(correct, axis=tuple(range(1, correct.ndim)))
  return loss, dict(accuracy=jnp.mean(per_example), per_example_accuracy=per_example,
                    keep_ratio=keep_ratio)


@flax.struct.dataclass
class C2IMetrics(clu_metrics.Collection):
  accuracy: clu_metrics.Average.from_output("accuracy")
  accuracy_by_keep: KeepRatioAccuracy


def sampling_params(state: state_lib.TrainState, name: str):
  """'params' or 'ema_i' (config.sample.params) -> that parameter tree."""
  return state.params if name == "params" else state.ema_params[int(name[4:])]


class C2ITask:
  """The C2I family for grn_jax.trainers.loop (a trainers.task.Task)."""
  param_groups = PARAM_GROUPS
  metrics = C2IMetrics
  validate_config = staticmethod(validate_config)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = build_c2i(config.model)
    self.tokens_per_example = config.model.input_size**2
    self.compute_dtype = config.model.dtype

  def _apply(self, params, labels, keep_ratio, class_labels):
    return self.model.apply({"params": params}, labels, keep_ratio, class_labels)

  def init_params(self, key: jax.Array, batch_size: int) -> Any:
    h, w, d = pipeline.label_shape(self.config.model)
    inputs = (jnp.zeros((batch_size, h, w, d), jnp.int32), jnp.zeros((batch_size,), jnp.float32),
              jnp.zeros((batch_size,), jnp.int32))
    return self.model.init(key, *inputs)["params"]

  def batch_spec(self) -> task_lib.BatchSpec:
    h, w, d = pipeline.label_shape(self.config.model)
    batch = self.config.train.global_batch_size
    return {"labels": (jax.ShapeDtypeStruct((batch, h, w, d), jnp.int32),
                       ("batch", None, None, None)),
            "class_labels": (jax.ShapeDtypeStruct((batch,), jnp.int32), ("batch",))}

  def loss(self, params: Any, batch: dict[str, jax.Array], key: jax.Array
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    return train_loss(params, batch, key, apply_fn=self._apply, config=self.config)

  def input_iterator(self, dataset, rows: tuple[int, int]) -> pipeline.TrainIterator:
    return pipeline.build_train_iterator(self.config, dataset, rows)

  def make_prepare(self, mesh: jax.sharding.Mesh, shardings: dict[str, Any]
                   ) -> Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]:
    """Label batches go to the devices as they are; image batches (tfds, folder) through the
    frozen HBQ tokenizer, inside one jit."""
    put = lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x))
    if self.config.data.source not in pipeline.IMAGE_SOURCES:
      return lambda local: {name: put(local[name], s) for name, s in shardings.items()}
    encode = online_tokenizer.make_label_encoder(self.config, mesh, shardings["labels"])
    image_sharding = jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec(*shardings["labels"].spec))
    return lambda local: {"labels": encode(put(local["image"], image_sharding)),
                          "class_labels": put(local["class_labels"], shardings["class_labels"])}

  def model_flops_per_example(self) -> float:
    return flops.c2i_train_flops_per_example(self.config.model)

  def sample_hook(self) -> task_lib.SampleHook | None:
    """A class grid of config.sample.params every train.sample_every_steps (if > 0)."""
    if self.config.train.sample_every_steps <= 0:
      return None
    config = self.config
    return lambda state, batch: {"samples": np.asarray(tokenizer_io.to_uint8(
        c2i_sampling.sample_grid_fn(config, sampling_params(state, config.sample.params))))}
