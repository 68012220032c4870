"""A reconstruction trainer for HBQ tokenizers, a task of grn_jax/trainers/loop.py.

  python -m grn_jax.main --mode=train --config=configs/tokenizer.py:variant=tiny --workdir=DIR

The official tokenizer training (LPIPS + GAN, GRN-SPEC §C.5) is not released; this task trains
with a pixel loss, enough for small data sets (the digits demo) or to fine-tune a converted
tokenizer (`config.train.init_from`):

  f      = tanh latents of the encoder                      float32 [B, H/16, W/16, d]
  f_hbq  = f + stop_gradient(dequantize(quantize(f)) - f)   straight-through HBQ (M rounds)
  z      = f_hbq for a fraction `quantize_prob` of the examples, f for the others
  loss   = l1_weight * |decode(z) - x| + l2_weight * (decode(z) - x)^2    (mean over pixels)

so the decoder learns to read the quantised latents that the GRN will generate, while the
continuous path keeps gradients informative. The `reconstruction` section holds hbq_rounds and
the loss weights; data, train and optim are the sections every task has (images from tfds, a
folder, synthetic patterns, or in memory: data.source = 'arrays' with `dataset=images [N, S, S,
3]`, uint8 or float in [-1, 1]). With `reconstruction.num_frames` = T > 1 the examples are
clips `dataset=videos [N, T, S, S, 3]` (in memory only; T = 1 + 4 k for the causal tokenizer,
latents [B, 1 + k, S/16, S/16, d]) and the same loss trains the joint video tokenizer.
"""

from typing import Any, Callable, Sequence

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax import hbq
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.data import pipeline
from grn_jax.models import build_tokenizer
from grn_jax.models import tokenizer as tokenizer_model
from grn_jax.trainers import state as state_lib
from grn_jax.trainers import task as task_lib

CONFIG_FIELDS = ("task", "mode", "seed", "tokenizer", "data", "train", "optim",
                 "reconstruction", "mesh", "sharding_rules")
RECONSTRUCTION_FIELDS = ("hbq_rounds", "l1_weight", "l2_weight", "quantize_prob", "num_frames")
SAMPLE_IMAGES = 8  # images of the reconstruction preview
FRAME_STRIDE = 4   # the causal tokenizer's temporal stride: clips of T = 1 + 4 k frames


def validate_config(config: ml_collections.ConfigDict, extra_sections: Sequence[str] = ()) -> None:
  """A whole tokenizer-task config (configs/tokenizer.py): errors name the field."""
  config_check.check_fields(config, "", CONFIG_FIELDS, optional=extra_sections)
  if config.task != "tokenizer":
    raise ValueError(f"config.task={config.task!r}: this is the check of a tokenizer config "
                     "(task 'tokenizer').")
  tokenizer_model.validate_tokenizer_config(config.tokenizer)
  config_check.check_fields(config.data, "data", pipeline.DATA_FIELDS)
  if config.data.source not in pipeline.IMAGE_TASK_SOURCES:
    raise ValueError(f"config.data.source must be one of {pipeline.IMAGE_TASK_SOURCES} for the "
                     f"tokenizer, got {config.data.source!r}.")
  state_lib.check_sections(config)
  recon = config.reconstruction
  config_check.check_fields(recon, "reconstruction", RECONSTRUCTION_FIELDS)
  if recon.hbq_rounds < 1:
    raise ValueError(f"config.reconstruction.hbq_rounds must be >= 1, got {recon.hbq_rounds}.")
  if not 0.0 <= recon.quantize_prob <= 1.0:
    raise ValueError(f"config.reconstruction.quantize_prob must lie in [0, 1], got "
                     f"{recon.quantize_prob}.")
  if recon.l1_weight < 0 or recon.l2_weight < 0 or recon.l1_weight + recon.l2_weight <= 0:
    raise ValueError("config.reconstruction.l1_weight and l2_weight must be >= 0 and not both "
                     f"0, got {recon.l1_weight} and {recon.l2_weight}.")
  frames = recon.num_frames
  if frames < 1 or (frames - 1) % FRAME_STRIDE:
    raise ValueError(f"config.reconstruction.num_frames must be 1 (images) or 1 + "
                     f"{FRAME_STRIDE} k (clips), got {frames}.")
  if frames > 1 and config.data.source != "arrays":
    raise ValueError(f"config.reconstruction.num_frames={frames} trains on clips in memory: "
                     f"set config.data.source='arrays', got {config.data.source!r}.")
  config_check.check_fields(config.mesh, "mesh", sharding.MESH_AXES)
  sharding.rules_from_config(config.sharding_rules)


def hbq_straight_through(latent: jnp.ndarray, rounds: int) -> jnp.ndarray:
  """Quantised values forward, identity gradient backward. float [..., d] -> float32 [..., d]."""
  quantized = hbq.dequantize(hbq.quantize(latent, rounds, "ind"), rounds, "ind")
  return latent + jax.lax.stop_gradient(quantized - latent)


def reconstruction_loss(params: Any, images: jnp.ndarray, key: jax.Array, *, module,
                        recon: ml_collections.ConfigDict
                        ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """The loss of one batch. Pure.

  Args:
    params: tokenizer params (encoder and decoder).
    images: float32 [B, H, W, 3] in [-1, 1], or clips [B, T, H, W, 3].
    key: this step's key; draws which examples go through HBQ.
    module: the HBQTokenizer.
    recon: config.reconstruction.

  Returns:
    (float32 [] weighted loss, outputs: `l1`, `l2` float32 []).
  """
  quantize = jax.random.uniform(key, (images.shape[0],)) < recon.quantize_prob
  latents = module.apply({"params": params}, images, method="encode")
  latents = jnp.where(quantize.reshape((-1,) + (1,) * (latents.ndim - 1)),
                      hbq_straight_through(latents, recon.hbq_rounds), latents)
  err = module.apply({"params": params}, latents, method="decode").astype(jnp.float32) - images
  l1, l2 = jnp.mean(jnp.abs(err)), jnp.mean(err**2)
  return recon.l1_weight * l1 + recon.l2_weight * l2, dict(l1=l1, l2=l2)


@flax.struct.dataclass
class TokenizerMetrics(clu_metrics.Collection):
  l1: clu_metrics.Average.from_output("l1")
  l2: clu_metrics.Average.from_output("l2")


class TokenizerTask:
  """The tokenizer family for grn_jax.trainers.loop (a trainers.task.Task)."""
  param_groups = state_lib.ParamGroups()
  metrics = TokenizerMetrics
  validate_config = staticmethod(validate_config)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.module = build_tokenizer(config.tokenizer)
    frames = config.reconstruction.num_frames
    size = config.data.image_size
    # One example: an image [S, S, 3] or a clip [T, S, S, 3].
    self.example_shape = (size, size, 3) if frames == 1 else (frames, size, size, 3)
    latent_frames = 1 + (frames - 1) // FRAME_STRIDE
    self.tokens_per_example = latent_frames * (size // 16)**2
    self.compute_dtype = config.tokenizer.dtype

  def init_params(self, key: jax.Array, batch_size: int) -> Any:
    del batch_size  # convolutions: the params do not depend on the batch
    return self.module.init(key, jnp.zeros((1,) + self.example_shape, jnp.float32))["params"]

  def batch_spec(self) -> task_lib.BatchSpec:
    batch = self.config.train.global_batch_size
    return {"images": (jax.ShapeDtypeStruct((batch,) + self.example_shape, jnp.float32),
                       ("batch",) + (None,) * len(self.example_shape))}

  def loss(self, params: Any, batch: dict[str, jax.Array], key: jax.Array
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    return reconstruction_loss(params, batch["images"], key, module=self.module,
                               recon=self.config.reconstruction)

  def input_iterator(self, dataset, rows: tuple[int, int]) -> pipeline.TrainIterator:
    if dataset is not None and np.shape(dataset)[1:] != self.example_shape:
      kind = "images" if len(self.example_shape) == 3 else "videos"
      raise ValueError(f"dataset must be {kind} [N, {', '.join(map(str, self.example_shape))}] "
                       f"(config.data.image_size={self.config.data.image_size}) for "
                       f"config.reconstruction.num_frames={self.config.reconstruction.num_frames}"
                       f", got shape {np.shape(dataset)}.")
    return pipeline.build_image_iterator(self.config, dataset, rows)

  def make_prepare(self, mesh: jax.sharding.Mesh, shardings: dict[str, Any]
                   ) -> Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]:
    """uint8 images go to the devices as uint8 and become [-1, 1] there (from_uint8)."""
    target = shardings["images"]
    to_float = jax.jit(tokenizer_io.from_uint8, out_shardings=target)

    def prepare(local):
      images = np.asarray(local["image"])
      if images.dtype == np.uint8:
        return {"images": to_float(jax.make_array_from_process_local_data(target, images))}
      return {"images": jax.make_array_from_process_local_data(target,
                                                               images.astype(np.float32))}

    return prepare

  def model_flops_per_example(self) -> None:
    return None  # the compiler's count of the step (no scanned loops here)

  def eval_hook(self, mesh: jax.sharding.Mesh) -> task_lib.EvalHook | None:
    """None: the tokenizer's evaluation is the reconstruction table (rFID, PSNR, SSIM) of
    `python -m grn_jax.evaluation.tokenizer_metrics`, not a training-time hook."""
    del mesh
    if self.config.train.eval_every_steps > 0:
      raise ValueError("config.train.eval_every_steps > 0: the tokenizer task has no "
                       "training-time evaluation; set it to 0 and run python -m "
                       "grn_jax.evaluation.tokenizer_metrics on a checkpoint.")
    return None

  def sample_hook(self) -> task_lib.SampleHook | None:
    """Every train.sample_every_steps (if > 0): the batch's first images (left) next to their
    HBQ reconstructions (right), uint8 [n, S, 2 S, 3] (clips: [n, T, S, 2 S, 3])."""
    if self.config.train.sample_every_steps <= 0:
      return None
    rounds = self.config.reconstruction.hbq_rounds
    encode = tokenizer_io.make_encode_fn(self.module, rounds, "ind")
    decode = tokenizer_io.make_decode_fn(self.module, rounds, "ind")

    def hook(state, batch):
      images = jax.device_get(batch["images"])[:SAMPLE_IMAGES]
      recon = decode(state.params, encode(state.params, images))
      pair = jnp.concatenate([images, recon], axis=-2)
      return {"reconstructions": np.asarray(tokenizer_io.to_uint8(pair))}

    return hook
