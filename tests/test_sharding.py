"""Mesh construction and logical-rule sharding on 8 fake CPU devices."""

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.models import build_c2i
from tests.models import test_grn_c2i as helpers


def test_mesh_shape_resolution_and_errors():
  assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert sharding.mesh_shape({"data": 1, "fsdp": -1, "tensor": 2}, 8) == (1, 4, 2)
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.mesh_shape({"data": 4, "fsdp": 4, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="does not divide"):
    sharding.mesh_shape({"data": -1, "fsdp": 3, "tensor": 1}, 8)
  with pytest.raises(ValueError, match="unknown axes"):
    sharding.mesh_shape({"dat": 8}, 8)
  with pytest.raises(ValueError, match="at most one"):
    sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="unknown mesh axis"):
    sharding.rules_from_config((("embed", "fsdpp"),))


def _setup(mesh_cfg):
  assert jax.device_count() == 8, "conftest must provide 8 fake CPU devices"
  cfg = helpers.tiny_cfg(hidden_size=64, num_heads=4)
  config = c2i_configs.get_config("variant=tiny")
  config.mesh.update(mesh_cfg)
  mesh = sharding.make_mesh(config.mesh)
  model = build_c2i(cfg)
  x = helpers.inputs(cfg, 8)
  init = lambda k: model.init(k, *x)
  return cfg, config, mesh, model, x, init


@pytest.mark.parametrize("mesh_cfg", [dict(data=2, fsdp=2, tensor=2), dict(data=-1, fsdp=1,
                                                                             tensor=1)])
def test_sharded_forward_equals_single_device(mesh_cfg):
  cfg, config, mesh, model, x, init = _setup(mesh_cfg)
  variables, shardings = sharding.sharded_init(init, mesh, config.sharding_rules,
                                               jax.random.key(0))
  reference_params = jax.jit(lambda k: nn.unbox(init(k)))(jax.random.key(0))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               variables, reference_params)
  rules = sharding.rules_from_config(config.sharding_rules)
  batch = jax.tree.map(lambda a: jax.device_put(a, sharding.batch_sharding(mesh, a.ndim)), x)

  def fwd(v, labels, t, y):
    with nn.logical_axis_rules(rules):
      return model.apply(v, labels, t, y)

  with jax.set_mesh(mesh):
    out = jax.jit(fwd, in_shardings=(shardings, *[b.sharding for b in batch]))(variables, *batch)
  ref = jax.jit(model.apply)(reference_params, *x)
  np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5, rtol=1e-5)


def test_parameters_land_with_rule_specs():
  _, config, mesh, _, _, init = _setup(dict(data=2, fsdp=2, tensor=2))
  variables, _ = sharding.sharded_init(init, mesh, config.sharding_rules, jax.random.key(0))
  p = variables["params"]
  qkv = p["blocks_pre"]["block_0"]["attn"]["qkv"]["kernel"]  # (embed, qkv, heads, kv)
  assert qkv.sharding.spec == P("fsdp", None, "tensor", None)
  w12 = p["blocks_pre"]["block_0"]["mlp"]["w12"]["kernel"]  # (embed, gate, mlp)
  assert w12.sharding.spec == P("fsdp", None, "tensor")
  proj = p["blocks_pre"]["block_0"]["attn"]["proj"]["kernel"]  # (heads, kv, embed)
  assert proj.sharding.spec == P("tensor", None, "fsdp")
  assert p["pos_embed"].sharding.spec == P(None, None, "fsdp")
  # Each device holds 1/4 of the qkv kernel (fsdp 2 x tensor 2).
  shard = qkv.addressable_shards[0].data
  assert shard.size * 4 == qkv.size


def test_scanned_params_get_a_layers_axis():
  cfg = helpers.tiny_cfg(scan_layers=True, depth=3)
  config = c2i_configs.get_config("variant=tiny")
  config.mesh.update(dict(data=2, fsdp=4, tensor=1))
  mesh = sharding.make_mesh(config.mesh)
  model = build_c2i(cfg)
  x = helpers.inputs(cfg, 8)
  variables, _ = sharding.sharded_init(lambda k: model.init(k, *x), mesh, config.sharding_rules,
                                       jax.random.key(0))
  w3 = variables["params"]["blocks_post"]["layers"]["mlp"]["w3"]["kernel"]
  assert w3.shape[0] == cfg.depth - cfg.in_context_start
  assert w3.sharding.spec == P(None, "tensor", "fsdp")  # (layers, mlp, embed)


def test_shard_host_batch_builds_global_arrays():
  mesh = sharding.make_mesh({"data": -1})
  batch = {"labels": np.arange(16).reshape(8, 2)}
  out = sharding.shard_host_batch(batch, mesh)
  assert out["labels"].shape == (8, 2)
  assert len(out["labels"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(out["labels"]), batch["labels"])


def test_make_mesh_uses_a_device_prefix_for_smaller_explicit_meshes():
  mesh = sharding.make_mesh({"data": 2, "fsdp": 1, "tensor": 1})
  assert mesh.devices.size == 2 and list(mesh.devices.flat) == jax.devices()[:2]
  with pytest.raises(ValueError, match="needs 16 devices"):
    sharding.make_mesh({"data": 16})
