"""On-the-fly HBQ labels: images -> frozen tokenizer encode -> HBQ quantize, in one jit.

Used for the image sources (tfds, folder) until pre-tokenized label shards exist. The tokenizer
and its params come from grn_jax.tokenizer_io.load_tokenizer(config.tokenizer): a converted
params directory, or random weights with `config.tokenizer.random_init=True` (tests only).
"""

from typing import Callable

import jax
import ml_collections

from grn_jax import sharding
from grn_jax import tokenizer_io


def make_label_encoder(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       out_sharding: jax.sharding.Sharding | None = None
                       ) -> Callable[[jax.Array], jax.Array]:
  """Returns encode(images uint8 [B, H, W, 3], global, batch-sharded) -> labels int32 [B,h,w,D].

  Images are mapped to [-1, 1] by tokenizer_io.from_uint8 (as the official loop); the tokenizer
  runs in float32; labels follow config.model.label_mode and land on `out_sharding` (default:
  the batch axis over ('data', 'fsdp')).
  """
  tokenizer_io.check_latent_dim(config)
  module, params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  params = jax.device_put(params, sharding.replicated(mesh))
  rounds, mode = config.model.hbq_rounds, config.model.label_mode

  def encode(tok_params, images):
    return tokenizer_io.encode_labels(module, tok_params, images, rounds, mode)

  jitted = jax.jit(encode, out_shardings=out_sharding or sharding.batch_sharding(mesh, 4))
  return lambda images: jitted(params, images)
