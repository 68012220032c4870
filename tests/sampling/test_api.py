"""Config-level sampling: determinism, and a sharded batch equals one device."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.sampling import api


def test_deterministic_given_seed_and_sharded_equals_single_device():
  config = c2i_configs.get_config("variant=tiny")
  config.sample.update(num_steps=4, cfg_scale=2.0, cfg_interval=(0.2, 1.0), temperature=1.0)
  module = api.model_apply(config).module
  x = (jnp.zeros((1, 4, 4, 4), jnp.int32), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *x)["params"])
  rng = np.random.default_rng(0)  # random params without compiling init
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), abstract)
  classes = np.arange(8, dtype=np.int32) % 10
  a, _ = api.sample_labels(config, params, classes, jax.random.key(7))
  b, _ = api.sample_labels(config, params, classes, jax.random.key(7))
  c, _ = api.sample_labels(config, params, classes, jax.random.key(8))
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()
  mesh = sharding.make_mesh({"data": -1})
  with jax.set_mesh(mesh):
    sharded = jax.device_put(classes, sharding.batch_sharding(mesh, 1))
    d, _ = api.sample_labels(config, params, sharded, jax.random.key(7))
  np.testing.assert_array_equal(a, d)
  # The loop state stays batch-sharded: every device holds one row.
  assert {shard.data.shape[0] for shard in d.addressable_shards} == {1}
