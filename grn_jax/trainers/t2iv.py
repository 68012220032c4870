"""Text-to-image / text-to-video GRN training, a task of grn_jax/trainers/loop.py (config.task
't2i' or 't2v'; the official recipe of GRN-SPEC §E.2).

  python -m grn_jax.main --config=configs/t2iv.py:task=t2i --workdir=DIR \
      --config.data.data_dir=SHARDS --config.train.init_from=CONVERTED_2B

One step on a batch of packed rows (grn_jax/data/packing.py, grn_jax/data/captioned.py):
  keep ratio  pt ~ U(0, 1) (keep_logit_std <= 0) or sigmoid(N(keep_logit_mean, keep_logit_std^2))
              per example, then the official shift_pt(pt, keep_shift)
  keep mask   ~ Bernoulli(pt) per bit; the other bits get uniform random bits; pt itself (the
              NOMINAL ratio, not the realised one) is the example's scale token
  image-to-video (ours): with probability p_first_frame a video keeps every bit of its latent
              frame 0 and takes no loss there (the conditioning of the sampler's image-to-video)
  captions    dropped to the empty prompt with probability caption_drop_prob, else replaced by
              the example's short caption (where the data has one) with probability
              short_caption_prob (on the host, when the row is packed)
  loss        CE over the 2 classes of every bit, averaged over the bits of a token, then over
              the example's visual tokens (scale token and kept frame 0 excluded), then over the
              examples of the global batch with equal weight (`packed_loss`)
  AdamW(0.9, 0.999), lr 2e-5 (no batch scaling), weight decay 0.005 except tensors of rank <= 1
  and biases, linear warm-up over optim.warmup_steps, clipping 2.0, EMA (grn_jax/trainers/state.py).

Input: config.data.source 'shards' (prepared captioned shards in data.data_dir) or 'arrays'
(`train(config, workdir, dataset=captioned.CaptionedArrays(examples, null_features))`).
"""

from typing import Any, Callable, Sequence

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax import sharding
from grn_jax.data import captioned
from grn_jax.data import captioned_shards
from grn_jax.data import packing
from grn_jax.models import build_t2iv
from grn_jax.models import grn_t2iv
from grn_jax.models import tokenizer as tokenizer_model
from grn_jax.trainers import state as state_lib
from grn_jax.trainers import task as task_lib
from grn_jax.trainers.metrics import KeepRatioAccuracy, cross_entropy

TASK_NAMES = ("t2i", "t2v")
CONFIG_FIELDS = ("task", "mode", "seed", "model", "tokenizer", "text_encoder", "data", "packing",
                 "corruption", "train", "optim", "mesh", "sharding_rules")
DATA_FIELDS = ("source", "data_dir", "pixels", "video_fps", "duration_step", "min_duration",
               "max_duration", "num_workers")
DATA_SOURCES = ("shards", "arrays")
PACKING_FIELDS = ("visual_tokens", "text_tokens", "max_samples")
CORRUPTION_FIELDS = ("keep_logit_mean", "keep_logit_std", "keep_shift", "caption_drop_prob",
                     "short_caption_prob", "p_first_frame")
# Every official no-decay name (pos_embed, scale_tokens, class_tokens, gamma, beta) is a tensor
# of rank <= 1 or absent here; rank <= 1 and biases are never decayed (state.py).
PARAM_GROUPS = state_lib.ParamGroups(frozen=(), no_decay=("bias",))


def validate_config(config: ml_collections.ConfigDict, extra_sections: Sequence[str] = ()) -> None:
  """A whole T2I/T2V training config (configs/t2iv.py); errors name the field. The `sample`
  section is the sampler's (optional here)."""
  config_check.check_fields(config, "", CONFIG_FIELDS, optional=("sample",) + tuple(extra_sections))
  if config.task not in TASK_NAMES:
    raise ValueError(f"config.task={config.task!r}: this is the check of a T2I/T2V config "
                     f"(task one of {TASK_NAMES}).")
  grn_t2iv.validate_t2iv_config(config.model)
  tokenizer_model.validate_tokenizer_config(config.tokenizer)
  config_check.check_fields(config.data, "data", DATA_FIELDS)
  config_check.check_fields(config.packing, "packing", PACKING_FIELDS)
  config_check.check_fields(config.corruption, "corruption", CORRUPTION_FIELDS)
  state_lib.check_sections(config)
  config_check.check_fields(config.mesh, "mesh", sharding.MESH_AXES)
  sharding.rules_from_config(config.sharding_rules)
  packing.PackingSpec(**config.packing)
  if config.data.source not in DATA_SOURCES:
    raise ValueError(f"config.data.source must be one of {DATA_SOURCES}, got "
                     f"{config.data.source!r}.")
  if config.text_encoder.dim != config.model.text_dim:
    raise ValueError(f"config.model.text_dim={config.model.text_dim} must equal the text "
                     f"encoder's config.text_encoder.dim={config.text_encoder.dim}.")
  if config.tokenizer.latent_dim != config.model.latent_dim:
    raise ValueError(f"config.model.latent_dim={config.model.latent_dim} must equal "
                     f"config.tokenizer.latent_dim={config.tokenizer.latent_dim}.")
  c = config.corruption
  for name in ("caption_drop_prob", "short_caption_prob", "p_first_frame"):
    if not 0.0 <= c[name] <= 1.0:
      raise ValueError(f"config.corruption.{name} must lie in [0, 1], got {c[name]}.")
  if c.keep_shift <= 0:
    raise ValueError(f"config.corruption.keep_shift must be > 0 (1 = no shift), got "
                     f"{c.keep_shift}.")
  for name in ("sample_every_steps", "eval_every_steps"):
    if config.train[name] > 0:
      raise ValueError(f"config.train.{name} must be 0 for T2I/T2V training (no training-time "
                       "sampling or FID yet): sample a checkpoint with --mode=t2i|t2v instead.")


def shift_keep_ratio(pt: jnp.ndarray, alpha: float) -> jnp.ndarray:
  """Official shift_pt: n = 1 - pt; n <- alpha n / (1 + (alpha - 1) n); 1 - n (alpha > 1000 means
  alpha - 1000). alpha > 1 moves the keep ratio towards more noise."""
  alpha = alpha - 1000 if alpha > 1000 else alpha
  noise = 1.0 - pt
  return 1.0 - alpha * noise / (1.0 + (alpha - 1.0) * noise)


def example_of_slot(visual_ids: jnp.ndarray) -> jnp.ndarray:
  """int [B, V] example 1..S (0 padding) -> int32 [B, V] index 0..S-1 (0 at padding)."""
  return jnp.maximum(visual_ids - 1, 0).astype(jnp.int32)


def corrupt(key: jax.Array, batch: dict[str, jnp.ndarray], *, keep_logit_mean: float,
            keep_logit_std: float, keep_shift: float, p_first_frame: float):
  """The official corruption of packed rows, plus the image-to-video first frame.

  Args:
    key: this step's key.
    batch: a packed batch: labels int [B, V, D], visual_ids [B, V], positions [B, V + L, 3],
      frames int [B, S] (latent frames of each example slot, 0 = empty slot).

  Returns:
    (inputs int32 [B, V, D], keep ratio float32 [B, S] (nominal, for the scale tokens),
    first_frame bool [B, V]: slots of a kept frame 0).
  """
  labels = batch["labels"].astype(jnp.int32)
  frames = batch["frames"]
  k_t, k_rand, k_keep, k_first = jax.random.split(key, 4)
  if keep_logit_std > 0:
    pt = jax.nn.sigmoid(keep_logit_mean +
                        keep_logit_std * jax.random.normal(k_t, frames.shape, jnp.float32))
  else:
    pt = jax.random.uniform(k_t, frames.shape, jnp.float32)
  pt = shift_keep_ratio(pt, keep_shift)
  example = example_of_slot(batch["visual_ids"])
  slot_pt = jnp.take_along_axis(pt, example, axis=1)
  keep_video_frame = (jax.random.uniform(k_first, frames.shape) < p_first_frame) & (frames > 1)
  num_visual = labels.shape[1]
  first = (jnp.take_along_axis(keep_video_frame, example, axis=1) &
           (batch["positions"][:, :num_visual, 0] == grn_t2iv.FRAME_OFFSET) &
           (batch["visual_ids"] > 0))
  keep = (jax.random.uniform(k_keep, labels.shape) < slot_pt[..., None]) | first[..., None]
  random_bits = jax.random.randint(k_rand, labels.shape, 0, grn_t2iv.LABEL_CLASSES, jnp.int32)
  return jnp.where(keep, labels, random_bits), pt, first


def packed_loss(logits: jnp.ndarray, labels: jnp.ndarray, visual_ids: jnp.ndarray,
                positions: jnp.ndarray, first_frame: jnp.ndarray, max_samples: int
                ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Official loss: CE averaged over bits, then over an example's tokens, then over examples.

  Args:
    logits: float32 [B, V, D, 2]; labels int [B, V, D]; visual_ids int [B, V];
    positions: int [B, V(+L), 3] (frame position 512 marks the scale tokens);
    first_frame: bool [B, V], slots without loss (a kept frame 0).
    max_samples: S.

  Returns:
    (float32 [] loss, outputs: per_example_loss / per_example_accuracy / example_weight
    float32 [B, S] (weight 1 for an example with loss tokens, else 0), accuracy float32 []).
  """
  num_visual = labels.shape[1]
  per_token = jnp.mean(cross_entropy(logits, labels.astype(jnp.int32)), axis=-1)    # [B, V]
  correct = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), axis=-1)
  is_token = ((visual_ids > 0) & (positions[:, :num_visual, 0] != grn_t2iv.SCALE_TOKEN_POSITION)
              & ~first_frame).astype(jnp.float32)
  onehot = jax.nn.one_hot(example_of_slot(visual_ids), max_samples) * is_token[..., None]
  count = jnp.sum(onehot, axis=1)                                                  # [B, S]
  per_example = jnp.einsum("bv,bvs->bs", per_token, onehot) / jnp.maximum(count, 1.0)
  accuracy = jnp.einsum("bv,bvs->bs", correct, onehot) / jnp.maximum(count, 1.0)
  weight = (count > 0).astype(jnp.float32)
  examples = jnp.maximum(jnp.sum(weight), 1.0)
  loss = jnp.sum(per_example * weight) / examples
  return loss, dict(per_example_loss=per_example, per_example_accuracy=accuracy,
                    example_weight=weight, accuracy=jnp.sum(accuracy * weight) / examples)


@flax.struct.dataclass
class T2IVMetrics(clu_metrics.Collection):
  accuracy: clu_metrics.Average.from_output("accuracy")
  examples_per_row: clu_metrics.Average.from_output("examples_per_row")
  accuracy_by_keep: KeepRatioAccuracy


class T2IVTask:
  """The T2I/T2V family for grn_jax.trainers.loop (a trainers.task.Task)."""
  param_groups = PARAM_GROUPS
  metrics = T2IVMetrics
  validate_config = staticmethod(validate_config)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.model = build_t2iv(config.model)
    self.spec = packing.PackingSpec(**config.packing)
    self.tokens_per_example = self.spec.visual_tokens + self.spec.text_tokens  # per row
    self.compute_dtype = config.model.dtype

  def init_params(self, key: jax.Array, batch_size: int) -> Any:
    # The parameters do not depend on the row length: a 2-slot row initialises them.
    d, s, t = self.model.labels_per_token, self.spec.max_samples, self.config.model.text_dim
    zeros = lambda *shape: jnp.zeros((batch_size,) + shape, jnp.int32)
    return self.model.init(key, zeros(2, d), jnp.zeros((batch_size, s), jnp.float32),
                           jnp.zeros((batch_size, 1, t), jnp.float32), zeros(2), zeros(1),
                           zeros(3, 3), method="packed")["params"]

  def batch_spec(self) -> task_lib.BatchSpec:
    b = self.config.train.global_batch_size
    shapes = packing.row_shapes(self.spec, self.model.labels_per_token, self.config.model.text_dim)
    axes = {"labels": ("batch", "length", None), "visual_ids": ("batch", "length"),
            "text_ids": ("batch", "length"), "positions": ("batch", "length", None),
            "frames": ("batch", None), "features": ("batch", "length", None)}
    return {name: (jax.ShapeDtypeStruct((b,) + shape, dtype), axes[name])
            for name, (shape, dtype) in shapes.items()}

  def loss(self, params: Any, batch: dict[str, jax.Array], key: jax.Array
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    c = self.config.corruption
    inputs, keep_ratio, first = corrupt(
        key, batch, keep_logit_mean=c.keep_logit_mean, keep_logit_std=c.keep_logit_std,
        keep_shift=c.keep_shift, p_first_frame=c.p_first_frame)
    logits = self.model.apply({"params": params}, inputs, keep_ratio, batch["features"],
                              batch["visual_ids"], batch["text_ids"], batch["positions"],
                              method="packed")
    loss, outputs = packed_loss(logits, batch["labels"], batch["visual_ids"], batch["positions"],
                                first, self.spec.max_samples)
    outputs.update(keep_ratio=keep_ratio,
                   examples_per_row=jnp.mean(jnp.sum((batch["frames"] > 0), axis=1)))
    return loss, outputs

  def input_iterator(self, dataset, rows: tuple[int, int]):
    data = self.config.data
    if data.source == "arrays":
      if not isinstance(dataset, captioned.CaptionedArrays):
        raise ValueError("config.data.source='arrays' needs train(..., dataset=grn_jax.data."
                         f"captioned.CaptionedArrays(examples, null_features)), got "
                         f"{type(dataset).__name__}.")
      source = dataset
    else:
      if dataset is not None:
        raise ValueError(f"a dataset was passed but config.data.source={data.source!r}; set it "
                         "to 'arrays'.")
      if not data.data_dir:
        raise ValueError("config.data.data_dir must name the prepared shards (python -m "
                         "grn_jax.data.tokenize_captioned --out=...).")
      source = captioned_shards.CaptionedShardSource(data.data_dir)
    if source.null_features.shape[-1] != self.config.model.text_dim:
      raise ValueError(f"the data's text features have dim {source.null_features.shape[-1]}, "
                       f"config.model.text_dim={self.config.model.text_dim}: prepare the data "
                       "with the model's text encoder.")
    return captioned.make_packed_iterator(
        source, self.spec, seed=self.config.seed, global_batch=self.config.train.global_batch_size,
        drop_prob=self.config.corruption.caption_drop_prob,
        short_prob=self.config.corruption.short_caption_prob, rows=rows,
        num_workers=data.num_workers)

  def make_prepare(self, mesh: jax.sharding.Mesh, shardings: dict[str, Any]
                   ) -> Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]:
    del mesh
    put = lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x))
    return lambda local: {name: put(local[name], s) for name, s in shardings.items()}

  def model_flops_per_example(self) -> None:
    return None  # the compiler's count of the step, per packed row

  def sample_hook(self) -> None:
    return None

  def eval_hook(self, mesh: jax.sharding.Mesh) -> None:
    del mesh
    return None  # train.eval_every_steps is 0 (validate_config)
