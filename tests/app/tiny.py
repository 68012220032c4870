"""A tiny random-weight app model (the test-size digits demo config, random GRN and tokenizer)
and a counter of XLA compilations.

Both parameter trees are drawn with numpy on the shapes of `jax.eval_shape(init)`, so nothing
compiles before the app's own programs (a compiled tokenizer init alone takes ~20 s on CPU).
"""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import demo as demo_configs
from grn_jax import models
from grn_jax.app import engine as app_engine
from grn_jax.app import families
from grn_jax.sampling import c2i


def tiny_config() -> ml_collections.ConfigDict:
  """configs/demo.py:size=test: a 2 x 2-token grid of 32 x 32 images, 4 labels per token."""
  return demo_configs.get_config("size=test")


def random_grn_params(config: ml_collections.ConfigDict, seed: int = 0):
  module = c2i.model_apply(config).module
  shape = c2i.spec_from_config(config).label_shape
  x = (jnp.zeros((1,) + shape, jnp.int32), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *x)["params"])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), abstract)


def random_tokenizer(config: ml_collections.ConfigDict, seed: int = 0):
  """(module, params): kernels ~ N(0, 1 / fan_in), biases 0, norm gains 1."""
  module = models.build_tokenizer(config.tokenizer)
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0),
                                     jnp.zeros((1, 16, 16, 3)))["params"])
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return rng.normal(0, fan_in**-0.5, leaf.shape).astype(np.float32)
    return np.full(leaf.shape, 1.0 if name == "gamma" else 0.0, np.float32)

  return module, jax.tree_util.tree_map_with_path(draw, abstract)


def tiny_engine(num_samples: int = 2) -> app_engine.Engine:
  config = tiny_config()
  tok_module, tok_params = random_tokenizer(config)
  return app_engine.Engine(families.family_of(config), random_grn_params(config), tok_module,
                           tok_params, num_samples=num_samples)


@contextlib.contextmanager
def count_compiles():
  """Yields a list that collects one entry per XLA backend compilation inside the block."""
  compiles = []

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
