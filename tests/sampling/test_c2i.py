"""The C2I adapter: config -> spec/settings, the null class, determinism, sharding, fixed labels,
the generation family."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.sampling import c2i
from grn_jax.sampling import refine


@pytest.fixture(scope="module")
def tiny():
  config = c2i_configs.get_config("variant=tiny")
  config.sample.update(num_steps=4, cfg_scale=2.0, cfg_interval=(0.2, 1.0), temperature=1.0)
  module = c2i.model_apply(config).module
  x = (jnp.zeros((1, 4, 4, 4), jnp.int32), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *x)["params"])
  rng = np.random.default_rng(0)  # random params without compiling init
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), abstract)
  return config, params


def test_deterministic_given_seed_and_sharded_equals_single_device(tiny):
  config, params = tiny
  classes = np.arange(8, dtype=np.int32) % 10
  a, _ = c2i.sample_labels(config, params, classes, jax.random.key(7))
  b, _ = c2i.sample_labels(config, params, classes, jax.random.key(7))
  c, _ = c2i.sample_labels(config, params, classes, jax.random.key(8))
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()
  mesh = sharding.make_mesh({"data": -1})
  with jax.set_mesh(mesh):
    sharded = jax.device_put(classes, sharding.batch_sharding(mesh, 1))
    d, _ = c2i.sample_labels(config, params, sharded, jax.random.key(7))
  np.testing.assert_array_equal(a, d)
  # The loop state stays batch-sharded: every device holds one row.
  assert {shard.data.shape[0] for shard in d.addressable_shards} == {1}


def test_adapter_is_the_loop_with_classes_and_the_null_class(tiny):
  config, params = tiny
  spec = c2i.spec_from_config(config)
  assert spec.label_shape == (4, 4, 4) and spec.label_values == 16
  assert spec.schedule.kind == "linear" and spec.schedule.final_keep_all
  settings = c2i.settings_from_config(config.sample)
  assert (settings.cfg_scale, settings.cfg_low, settings.cfg_high) == (2.0, 0.2, 1.0)
  classes = jnp.array([3, 1, 4, 1], jnp.int32)
  keys = refine.row_keys(jax.random.key(2), 4)
  direct = refine.jitted_sampler(c2i.model_apply(config), spec)(
      params, classes, jnp.full((4,), config.model.num_classes, jnp.int32), keys, settings)
  out = c2i.sample(config, params, classes, jax.random.key(2))
  np.testing.assert_array_equal(out.labels, direct.labels)
  np.testing.assert_array_equal(c2i.null_labels(classes, 10), [10] * 4)
  # Another unconditional class gives other samples: the adapter really passes the null class.
  other = refine.jitted_sampler(c2i.model_apply(config), spec)(
      params, classes, jnp.zeros((4,), jnp.int32), keys, settings)
  assert (np.asarray(other.labels) != np.asarray(out.labels)).any()


def test_fixed_labels_through_the_adapter(tiny):
  # Inpainting: keep the labels outside a square, regenerate inside.
  config, params = tiny
  classes = np.array([2, 7], np.int32)
  source = c2i.sample(config, params, classes, jax.random.key(3)).labels
  mask = np.ones((2, 4, 4, 4), bool)
  mask[:, 1:3, 1:3] = False
  out = c2i.sample(config, params, classes, jax.random.key(4), fixed_labels=source,
                   fixed_mask=jnp.asarray(mask))
  np.testing.assert_array_equal(np.asarray(out.labels)[mask], np.asarray(source)[mask])
  assert (np.asarray(out.labels)[~mask] != np.asarray(source)[~mask]).any()


def test_config_errors_name_the_field(tiny):
  config, _ = tiny
  bad = config.copy_and_resolve_references()
  bad.sample.temperature = 0.0
  with pytest.raises(ValueError, match="config.sample.temperature"):
    c2i.spec_from_config(bad)
  bad = config.copy_and_resolve_references()
  bad.sample.cfg_interval = (0.1, 0.5, 1.0)
  with pytest.raises(ValueError, match="cfg_interval"):
    c2i.spec_from_config(bad)
  bad = config.copy_and_resolve_references()
  bad.sample.schedule = "cosinus"
  with pytest.raises(ValueError, match="sample.schedule"):
    c2i.spec_from_config(bad)
  bad = config.copy_and_resolve_references()
  bad.sample.unknown_field = 1
  with pytest.raises(ValueError, match="unknown fields"):
    c2i.spec_from_config(bad)


def test_generation_family(tiny):
  config, params = tiny
  config = config.copy_and_resolve_references()
  config.sample.update(per_class=2, num_images=5, warmup_steps=1, min_steps=2, max_steps=4)
  family = c2i.C2IGeneration(config, adaptive=True)
  assert family.num_outputs == 5 and family.spec.adaptive
  np.testing.assert_array_equal(family.conditions(np.array([0, 1, 2, 4])), [0, 0, 1, 2])
  assert family.metadata(3) == {c2i.CLASS_KEY: 1}
  record = family.record()
  assert record["task"] == "c2i" and record["sample"]["adaptive"] is True
  assert record["sample"]["per_class"] == 2 and "output_dir" not in record["sample"]
  np.testing.assert_array_equal(c2i.class_schedule(3, 2), [0, 0, 1, 1, 2, 2])
  mesh = sharding.make_mesh(config.mesh)
  placed = family.place_params(params, mesh)
  assert jax.tree.structure(placed) == jax.tree.structure(params)
  broken = dict(params)
  broken.pop(sorted(broken)[0])
  with pytest.raises(ValueError, match="do not match the model"):
    family.place_params(broken, mesh)
