"""On-the-fly HBQ labels: images -> frozen tokenizer encode -> HBQ quantize, in one jit.

Used for the image sources (tfds, folder) until pre-tokenized label shards exist. The tokenizer
params come from `config.tokenizer.checkpoint` (an Orbax `{'params': ...}` directory written by
the converter), or from a random init when `config.data.tokenizer_random_init` is True
(tests only; a warning says so).
"""

from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import hbq
from grn_jax import sharding


def load_tokenizer_params(config: ml_collections.ConfigDict, module, image_size: int):
  """Tokenizer params from config.tokenizer.checkpoint, or random when explicitly allowed."""
  path = config.tokenizer.get("checkpoint", "")
  if config.data.get("tokenizer_random_init", False):
    logging.warning("config.data.tokenizer_random_init=True: training on labels from a RANDOM "
                    "tokenizer (tests only); config.tokenizer.checkpoint=%r is ignored.", path)
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return jax.jit(lambda k: module.init(k, images, method="encode")["params"])(
        jax.random.key(config.seed + 1))
  if not path:
    raise ValueError("image sources need tokenizer weights: set config.tokenizer.checkpoint to "
                     "the Orbax params directory written by `python -m grn_jax.convert`, or "
                     "config.data.tokenizer_random_init=True for a test run.")
  if path.startswith("hf://") or path.endswith((".ckpt", ".pth", ".pt")):
    raise ValueError(f"config.tokenizer.checkpoint={path!r} is a PyTorch file; convert it first "
                     "with `python -m grn_jax.convert` and point the config at the output "
                     "directory.")
  from grn_jax import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.restore_params(path)


def make_label_encoder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                       ) -> Callable[[jax.Array], jax.Array]:
  """Returns encode(images uint8 [B, H, W, 3], global, batch-sharded) -> labels int32 [B,h,w,D].

  Images are mapped to [-1, 1] as the official loop (x / 255 * 2 - 1); the tokenizer runs in
  float32; labels follow config.model.label_mode.
  """
  from grn_jax.models import build_tokenizer  # pylint: disable=g-import-not-at-top
  module = build_tokenizer(config.tokenizer)
  params = load_tokenizer_params(config, module, config.data.image_size)
  params = jax.device_put(params, sharding.replicated(mesh))
  rounds, mode = config.model.hbq_rounds, config.model.label_mode
  latent_dim = config.tokenizer.latent_dim
  if latent_dim != config.model.latent_dim:
    raise ValueError(f"config.tokenizer.latent_dim={latent_dim} != config.model.latent_dim="
                     f"{config.model.latent_dim}.")

  def encode(tok_params, images):
    x = images.astype(jnp.float32) / 255.0 * 2.0 - 1.0
    latent = module.apply({"params": tok_params}, x, method="encode")
    return hbq.quantize(latent, rounds, mode)

  out_sharding = sharding.batch_sharding(mesh, 4)
  jitted = jax.jit(encode, out_shardings=out_sharding)
  return lambda images: jitted(params, images)


def check_latent_grid(labels: np.ndarray, config: ml_collections.ConfigDict) -> None:
  """Raises if the tokenizer output does not match the model's label grid."""
  from grn_jax.data.pipeline import label_shape  # pylint: disable=g-import-not-at-top
  if tuple(labels.shape[1:]) != label_shape(config.model):
    raise ValueError(f"tokenizer labels have shape {labels.shape[1:]}, the model expects "
                     f"{label_shape(config.model)}; check config.data.image_size and "
                     "config.model.input_size.")
