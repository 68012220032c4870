"""On-the-fly HBQ labels of image batches (the frozen tokenizer inside one jit)."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import hbq
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.data import online_tokenizer


class _PoolTokenizer(nn.Module):
  """Stand-in for the HBQ tokenizer: 16x16 mean pool -> dense -> tanh."""
  latent_dim: int

  @nn.compact
  def encode(self, images):
    b, h, w, c = images.shape
    pooled = images.reshape(b, h // 16, 16, w // 16, 16, c).mean(axis=(2, 4))
    return jnp.tanh(nn.Dense(self.latent_dim, name="proj")(pooled) * 4)

  def __call__(self, images):
    return self.encode(images)


def test_online_encoder_quantizes_tokenizer_latents(monkeypatch):
  import grn_jax.models as models  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(models, "build_tokenizer", lambda cfg: _PoolTokenizer(cfg.latent_dim))
  config = c2i_configs.get_config("variant=tiny")
  mesh = sharding.make_mesh(config.mesh)
  with pytest.raises(ValueError, match="tokenizer.random_init"):
    online_tokenizer.make_label_encoder(config, mesh)
  config.tokenizer.random_init = True
  encode = online_tokenizer.make_label_encoder(config, mesh)
  images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
  labels = np.asarray(encode(sharding.shard_host_batch(images, mesh)))
  module, params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  latent = module.apply({"params": params}, images / 255.0 * 2 - 1, method="encode")
  np.testing.assert_array_equal(labels, np.asarray(hbq.quantize(latent, 4, "ind")))
  assert labels.shape == (8, 4, 4, 4) and len(np.unique(labels)) > 4
  config.tokenizer.random_init = False
  config.tokenizer.checkpoint = "hf://bytedance-research/GRN/x.ckpt"
  with pytest.raises(ValueError, match="convert it first"):
    online_tokenizer.make_label_encoder(config, mesh)
