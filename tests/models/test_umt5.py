"""umT5 encoder: relative buckets, one layer and the whole encoder against numpy transcriptions,
padding invariance, scan/remat, bf16, config validation, sharding, the XXL parameter count."""

import types

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import umt5 as umt5_configs
from grn_jax import models
from grn_jax import sharding
from grn_jax.models import umt5
from tests.models import umt5_reference as ref


def tiny_config(**overrides):
  cfg = umt5_configs.text_encoder_config("tiny")
  cfg.update(overrides)
  return cfg


def random_params(enc, length=8, seed=0):
  """Initialised params with norms far from 1 and position tables large enough to matter."""
  ids = jnp.ones((1, length), jnp.int32)
  params = nn.unbox(enc.init(jax.random.key(seed), ids, jnp.ones((1, length)))["params"])
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return x + rng.normal(0, 0.5, x.shape).astype(x.dtype)
    if "pos_embedding" in name:
      return x * 30
    return x
  return jax.tree_util.tree_map_with_path(perturb, params)


def padded_batch(lengths, total, vocab, seed=0):
  rng = np.random.default_rng(seed)
  ids = np.zeros((len(lengths), total), np.int32)
  mask = np.zeros((len(lengths), total), np.int32)
  for row, n in enumerate(lengths):
    ids[row, :n] = rng.integers(1, vocab, n)
    mask[row, :n] = 1
  return ids, mask


def test_relative_position_buckets_by_hand_and_against_scalar_transcription():
  table = umt5.relative_position_buckets(200, 200, 32, 128)
  # Keys at or before the query: exact up to 7, then log-spaced, capped at 15 (from 91 on).
  before = {0: 0, 1: 1, 7: 7, 8: 8, 11: 8, 12: 9, 16: 10, 22: 10, 23: 11, 32: 12, 64: 14,
            90: 14, 91: 15, 199: 15}
  for distance, bucket in before.items():
    assert table[distance, 0] == bucket, distance           # key 0, query `distance`
    assert table[0, distance] == bucket + 16 * (distance > 0), distance  # key after the query
  assert table.dtype == np.int32 and table.min() == 0 and table.max() == 31
  # Bucket 16 (distance 0 "after" the query) is never used: d > 0 starts at 17.
  np.testing.assert_array_equal(np.unique(table), [b for b in range(32) if b != 16])
  rect = umt5.relative_position_buckets(5, 300, 32, 128)
  expected = np.array([[ref.bucket(j - i) for j in range(300)] for i in range(5)])
  np.testing.assert_array_equal(rect, expected)
  small = umt5.relative_position_buckets(40, 40, 8, 16)
  np.testing.assert_array_equal(
      small, [[ref.bucket(j - i, 8, 16) for j in range(40)] for i in range(40)])


def test_one_layer_matches_numpy():
  cfg = tiny_config(num_layers=1)
  layer = umt5.EncoderLayer(cfg.dim_attn, cfg.dim_ffn, cfg.num_heads, cfg.num_buckets)
  x = jax.random.normal(jax.random.key(1), (2, 13, cfg.dim))
  mask = jnp.asarray(np.arange(13)[None] < np.array([[13], [6]]))
  buckets = jnp.asarray(umt5.relative_position_buckets(13, 13, 32, 128))
  params = nn.unbox(layer.init(jax.random.key(2), x, mask, buckets)["params"])
  rng = np.random.default_rng(3)
  params["norm1"]["scale"] = jnp.asarray(rng.normal(1, 0.5, cfg.dim), jnp.float32)
  params["norm2"]["scale"] = jnp.asarray(rng.normal(1, 0.5, cfg.dim), jnp.float32)
  params["pos_embedding"] = params["pos_embedding"] * 30
  out = layer.apply({"params": params}, x, mask, buckets)
  want = ref.layer(np.asarray(x, np.float64), np.asarray(mask), ref.as_float64(params))
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-5)
  # The bias matters: dropping it changes the result by far more than the tolerance.
  flat = dict(params, pos_embedding=jnp.zeros_like(params["pos_embedding"]))
  assert np.abs(np.asarray(layer.apply({"params": flat}, x, mask, buckets)) - want).max() > 1e-2


def test_encoder_matches_numpy_and_ignores_padding():
  cfg = tiny_config()
  enc = models.build_umt5(cfg)
  params = random_params(enc)
  ids, mask = padded_batch([5, 11], 16, cfg.vocab_size)
  out = np.asarray(enc.apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask)))
  chex.assert_shape(out, (2, 16, cfg.dim))
  assert out.dtype == np.float32
  want = ref.encoder(ids, mask, ref.as_float64(params), cfg.num_layers)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  # The same prompts padded to 48: the valid rows do not move; changing the pad ids neither.
  long_ids, long_mask = np.zeros((2, 48), np.int32), np.zeros((2, 48), np.int32)
  long_ids[:, :16], long_mask[:, :16] = ids, mask
  long_ids[:, 30:] = 7
  longer = np.asarray(enc.apply({"params": params}, jnp.asarray(long_ids),
                                jnp.asarray(long_mask.astype(bool))))
  for row, n in enumerate([5, 11]):
    np.testing.assert_allclose(longer[row, :n], out[row, :n], rtol=1e-6, atol=1e-6)
  # A masked-out valid token does change the others (the mask is honoured, not ignored).
  fewer = mask.copy()
  fewer[1, 10] = 0
  moved = np.asarray(enc.apply({"params": params}, jnp.asarray(ids), jnp.asarray(fewer)))
  assert np.abs(moved[1, :10] - out[1, :10]).max() > 1e-3


@pytest.mark.parametrize("remat_policy", ["none", "full"])
def test_scanned_layers_equal_unrolled(remat_policy):
  cfg = tiny_config(num_layers=3)
  enc = models.build_umt5(cfg)
  params = random_params(enc)
  ids, mask = padded_batch([9, 3], 12, cfg.vocab_size)
  want = enc.apply({"params": params}, ids, mask)
  rematted = models.build_umt5(tiny_config(num_layers=3, remat_policy=remat_policy))
  got = jax.jit(rematted.apply)({"params": params}, ids, mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  scanned = models.build_umt5(tiny_config(num_layers=3, scan_layers=True,
                                          remat_policy=remat_policy))
  stacked = {k: v for k, v in params.items() if not k.startswith("layer_")}
  stacked["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs),
                                   *[params[f"layer_{i}"] for i in range(3)])
  shapes = jax.eval_shape(scanned.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                          jnp.ones((1, 4)))["params"]
  chex.assert_trees_all_equal_shapes(nn.unbox(shapes), stacked)
  got = jax.jit(scanned.apply)({"params": stacked}, ids, mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_bfloat16_weights_and_compute_stay_close_to_float32():
  enc32 = models.build_umt5(tiny_config())
  params = random_params(enc32)
  enc16 = models.build_umt5(tiny_config(dtype="bfloat16"))
  shapes = jax.eval_shape(enc16.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                          jnp.ones((1, 4)))["params"]
  assert {x.dtype for x in jax.tree.leaves(nn.unbox(shapes))} == {jnp.dtype(jnp.bfloat16)}
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  ids, mask = padded_batch([7, 12], 12, 384)
  out32 = np.asarray(enc32.apply({"params": params}, ids, mask))
  out16 = enc16.apply({"params": params16}, ids, mask)
  assert out16.dtype == jnp.float32
  err = np.abs(np.asarray(out16) - out32).max() / np.abs(out32).max()
  assert 1e-4 < err < 5e-2, err  # bf16 rounding is visible, and small


def test_contract_configs_and_validation_errors():
  fields = dict(vocab_size=50, dim=8, dim_attn=8, dim_ffn=12, num_heads=2, num_layers=1,
                num_buckets=32, max_distance=128, dtype="float32")
  for cfg in (fields, types.SimpleNamespace(**fields)):
    enc = models.build_umt5(cfg)
    assert (enc.scan_layers, enc.remat_policy) == (False, "none")
    params = enc.init(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3)))
    chex.assert_shape(enc.apply(params, jnp.ones((2, 5), jnp.int32), jnp.ones((2, 5))),
                      (2, 5, 8))
  cases = [(dict(fields, num_head=2), "unknown fields \\['num_head'\\]"),
           ({k: v for k, v in fields.items() if k != "dim_ffn"}, "missing fields \\['dim_ffn'\\]"),
           (dict(fields, dim_attn=9), "dim_attn=9 is not divisible by num_heads=2"),
           (dict(fields, num_buckets=30), "num_buckets=30"),
           (dict(fields, dtype="float16"), "dtype must be one of"),
           (dict(fields, num_layers=0), "num_layers must be a positive integer"),
           (dict(fields, remat_policy="some"), "remat_policy must be one of")]
  for cfg, message in cases:
    with pytest.raises(ValueError, match=message):
      models.build_umt5(cfg)
  enc = models.build_umt5(fields)
  params = enc.init(jax.random.key(0), jnp.ones((1, 3), jnp.int32), jnp.ones((1, 3)))
  with pytest.raises(ValueError, match="ids \\[B, L\\] and a mask of the same shape"):
    enc.apply(params, jnp.ones((2, 5), jnp.int32), jnp.ones((2, 4)))
  bad = enc.apply(params, jnp.array([[1, 50, 2], [1, -1, 2]]), jnp.ones((2, 3)))
  assert np.isnan(np.asarray(bad)).all()  # out-of-vocabulary ids are loud, not wrapped


def test_sharded_init_and_forward_match_single_device():
  cfg = tiny_config()
  enc = models.build_umt5(cfg)
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  rules = umt5_configs.sharding_rules()
  ids, mask = padded_batch([3, 8, 1, 16], 16, cfg.vocab_size)
  init = lambda key: enc.init(key, jnp.asarray(ids), jnp.asarray(mask))  # noqa: E731
  variables, shardings = sharding.sharded_init(init, mesh, rules, jax.random.key(0))
  layer = variables["params"]["layer_0"]
  assert layer["q"].sharding.spec == P("fsdp", "tensor", None)      # (embed, heads, kv)
  assert layer["o"].sharding.spec == P("tensor", None, "fsdp")      # (heads, kv, embed)
  assert layer["fc2"].sharding.spec == P("tensor", "fsdp")          # (mlp, embed)
  assert layer["pos_embedding"].sharding.spec == P(None, "tensor")  # (relpos_buckets, heads)

  def forward(v, ids, mask):
    with nn.logical_axis_rules(sharding.rules_from_config(rules)):
      return enc.apply(v, ids, mask)

  batch = [jax.device_put(a, sharding.batch_sharding(mesh, 2)) for a in (ids, mask)]
  with jax.set_mesh(mesh):
    out = jax.jit(forward, in_shardings=(shardings, *[b.sharding for b in batch]))(
        variables, *batch)
  single = enc.apply(jax.device_get(variables), ids, mask)
  np.testing.assert_allclose(np.asarray(out), np.asarray(single), rtol=1e-5, atol=1e-5)


def test_xxl_parameter_count_and_layout():
  cfg = umt5_configs.get_config("variant=xxl").text_encoder
  enc = models.build_umt5(cfg)
  shapes = nn.unbox(jax.eval_shape(enc.init, jax.random.key(0), jnp.ones((1, 2), jnp.int32),
                                   jnp.ones((1, 2)))["params"])
  per_layer = 4 * 4096 * 4096 + 3 * 4096 * 10240 + 2 * 4096 + 32 * 64
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 256384 * 4096 + 24 * per_layer + 4096
  assert shapes["layer_23"]["q"].shape == (4096, 64, 64)
  assert shapes["layer_23"]["pos_embedding"].shape == (32, 64)
  assert {x.dtype for x in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.bfloat16)}
