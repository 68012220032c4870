"""The T2I/T2V transformer: official sizes, parity with the numpy transcription (image and
non-square video, grouped-query heads, padded prompts), the text prefix cache, RoPE tables,
scan/remat switches, bf16, bad inputs."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import t2iv as t2iv_configs
from grn_jax import sharding
from grn_jax.convert import t2iv as t2iv_convert
from grn_jax.models import build_t2iv, grn_t2iv, layers

from . import t2iv_reference as ref


def tiny_cfg(**kw):
  cfg = t2iv_configs.model_config("tiny")
  cfg.update(kw)
  return cfg


def shapes_of(cfg):
  return ref.official_shapes(cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.num_kv_heads,
                             cfg.mlp_ratio, cfg.block_chunks, cfg.hbq_rounds * cfg.latent_dim,
                             cfg.text_dim)


def inputs(cfg, batch=2, frames=1, h=4, w=4, length=6, lengths=(4, 6), seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2, (batch, frames, h, w, cfg.hbq_rounds * cfg.latent_dim))
  scale = rng.uniform(0, 1, batch).astype(np.float32)
  features = rng.standard_normal((batch, length, cfg.text_dim)).astype(np.float32)
  mask = np.arange(length)[None] < np.asarray(lengths)[:, None]
  return labels.astype(np.int32), scale, features, mask


def reference(cfg, sd, labels, scale, features, mask, h_div_w):
  return ref.forward(sd, labels, scale, features, mask, h_div_w, cfg.depth, cfg.block_chunks,
                     cfg.num_heads, cfg.num_kv_heads)


@pytest.mark.parametrize("variant,count", [("2B", 2_197_832_448), ("8B", 8_796_829_184)])
def test_parameter_counts(variant, count):
  model = build_t2iv(t2iv_configs.model_config(variant))
  cfg = t2iv_configs.model_config(variant)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs(cfg, 1, 1, 2, 2, 3, (3,)))
  leaves = jax.tree.leaves(shapes)
  assert sum(math.prod(x.shape) for x in leaves) == count
  assert len(leaves) == len(shapes_of(cfg))  # 319 tensors for 2B
  assert grn_t2iv.mlp_width(2304, 3.55) == 8192 and grn_t2iv.mlp_width(4096, 4.0) == 16384


@pytest.mark.parametrize("case", ["image", "video_gqa_scan"])
def test_matches_numpy_transcription(case):
  """Logits and every layer's text keys/values against the float64 transcription."""
  if case == "image":
    cfg, shape, h_div_w = tiny_cfg(num_kv_heads=4), dict(frames=1, h=4, w=4), 1.0
  else:  # 3 latent frames, 3 x 5 grid, aspect 9/16, 2 query heads per kv head, scanned blocks
    cfg, shape, h_div_w = tiny_cfg(scan_layers=True), dict(frames=3, h=3, w=5), 9 / 16
  sd = ref.random_state_dict(shapes_of(cfg), seed=1)
  params = t2iv_convert.t2iv_params_from_torch(sd, cfg)
  labels, scale, features, mask = inputs(cfg, **shape)
  features[~mask] = np.nan  # padded rows are ignored
  model = build_t2iv(cfg)
  text = jax.jit(lambda p, f, m: model.apply({"params": p}, f, m, method="encode_text"))(
      params, features, mask)
  logits = jax.jit(lambda p, l, s, t: model.apply({"params": p}, l, s, t, h_div_w=h_div_w,
                                                  method="denoise"))(params, labels, scale, text)
  want, want_kv = reference(cfg, sd, labels, scale, features, mask, h_div_w)
  assert logits.dtype == jnp.float32 and logits.shape == want.shape
  assert np.abs(want).max() > 0.5
  np.testing.assert_allclose(logits, want, atol=2e-5 * np.abs(want).max(), rtol=0)
  assert text["keys"].dtype == jnp.float32
  assert text.keys.shape == (cfg.depth, 2, 6, cfg.num_kv_heads, cfg.hidden_size // cfg.num_heads)
  for b, n in enumerate(mask.sum(1)):
    for layer, (k, v) in enumerate(want_kv[b]):
      np.testing.assert_allclose(text.keys[layer, b, :n], k, atol=2e-5 * np.abs(k).max())
      np.testing.assert_allclose(text.values[layer, b, :n], v, atol=2e-5 * np.abs(v).max())
    np.testing.assert_array_equal(text.keys[:, b, n:], 0)
  # __call__ = encode_text then denoise.
  full = model.apply({"params": params}, labels, scale, features, mask, h_div_w=h_div_w)
  np.testing.assert_allclose(full, logits, atol=1e-6)


def test_prompts_and_rows_are_independent():
  """A row's logits depend only on its own labels, scale and prompt (not the other rows, not
  the pad length); text keys do not depend on the visual tokens at all."""
  cfg = tiny_cfg()
  params = t2iv_convert.t2iv_params_from_torch(ref.random_state_dict(shapes_of(cfg), 2), cfg)
  model = build_t2iv(cfg)
  apply = jax.jit(lambda *a: model.apply({"params": params}, *a, h_div_w=0.75))
  labels, scale, features, mask = inputs(cfg, lengths=(3, 6))
  base = apply(labels, scale, features, mask)
  other = labels.copy()
  other[1] = 1 - other[1]
  features2 = features.copy()
  features2[1] += 1.0
  changed = apply(other, scale, features2, mask)
  np.testing.assert_allclose(changed[0], base[0], atol=1e-6)
  assert float(jnp.abs(changed[1] - base[1]).max()) > 1e-3
  longer = np.concatenate([features, np.ones_like(features)], axis=1)
  longer_mask = np.concatenate([mask, np.zeros_like(mask)], axis=1)
  np.testing.assert_allclose(apply(labels, scale, longer, longer_mask), base, atol=1e-5)


def test_rope_tables_and_positions():
  former, last = layers.rope_3d_frequencies(128)
  assert former.shape == (21,) and last.shape == (22,)
  np.testing.assert_allclose(former[1], 10000 ** (-1 / 21), rtol=1e-6)
  np.testing.assert_allclose(last[1], 10000 ** (-1 / 22), rtol=1e-6)
  cos, sin = layers.rope_3d_tables(np.array([600]), np.array([3]), np.array([5]), 12)
  # head_dim 12: 6 pairs = 2 frame + 2 height + 2 width, each angle on both members of a pair.
  angles = np.array([600, 600 * 0.01, 3, 3 * 0.01, 5, 5 * 0.01]).repeat(2)
  np.testing.assert_allclose(cos[0], np.cos(angles), atol=2e-5)
  np.testing.assert_allclose(sin[0], np.sin(angles), atol=2e-5)
  f, y, x = grn_t2iv.visual_positions(2, 64, 64, 1.0)
  assert f.shape == (2 * 64 * 64 + 1,)
  assert (f[-1], y[-1], x[-1]) == (512, 0, 0)  # the scale token
  assert (f[0], f[64 * 64]) == (600, 601)
  assert y[32 * 64] == 64 and x[32] == 64  # 32 * 129 / 64 = 64.5 -> 64 (half to even)
  for got, want in zip(grn_t2iv.visual_positions(3, 3, 5, 0.55), ref.visual_positions(3, 3, 5,
                                                                                      0.55)):
    np.testing.assert_array_equal(got, want)


def test_scan_remat_and_unrolled_agree():
  cfg = tiny_cfg(depth=2)
  sd = ref.random_state_dict(shapes_of(cfg), seed=3)
  labels, scale, features, mask = inputs(cfg, frames=2, h=2, w=3)
  outs = []
  for scan, remat in ((False, "none"), (True, "full"), (False, "dots")):  # scanned forward: above
    c = tiny_cfg(depth=2, scan_layers=scan, remat_policy=remat)
    params = t2iv_convert.t2iv_params_from_torch(sd, c)
    model = build_t2iv(c)
    loss = lambda p, model=model: jnp.sum(
        jnp.sin(model.apply({"params": p}, labels, scale, features, mask, h_div_w=0.6)))
    val, grad = jax.jit(jax.value_and_grad(loss))(params)
    outs.append((float(val), t2iv_convert.t2iv_params_to_torch(grad, c)))
  for val, grad in outs[1:]:
    np.testing.assert_allclose(val, outs[0][0], rtol=1e-5)
    for key, g in grad.items():
      np.testing.assert_allclose(g, outs[0][1][key], rtol=1e-4,
                                 atol=1e-5 * float(np.abs(outs[0][1][key]).max()))


def test_chunked_attention_impl_matches_xla():
  cfg = tiny_cfg(depth=2)
  sd = ref.random_state_dict(shapes_of(cfg), seed=4)
  x = inputs(cfg, frames=2, h=4, w=4)
  out = {}
  for impl in ("xla", "chunked"):
    c = tiny_cfg(depth=2, attention_impl=impl)
    params = t2iv_convert.t2iv_params_from_torch(sd, c)
    out[impl] = jax.jit(lambda p, *a, c=c: build_t2iv(c).apply({"params": p}, *a))(params, *x)
  np.testing.assert_allclose(out["chunked"], out["xla"], atol=1e-5)


def test_bfloat16_compute_float32_params_and_outputs():
  cfg = tiny_cfg(depth=2)
  params = t2iv_convert.t2iv_params_from_torch(ref.random_state_dict(shapes_of(cfg), 5), cfg)
  x = inputs(cfg)
  model32, model16 = build_t2iv(cfg), build_t2iv(tiny_cfg(depth=2, dtype="bfloat16"))
  ref32 = jax.jit(model32.apply)({"params": params}, *x)
  out = jax.jit(model16.apply)({"params": params}, *x)
  text = jax.jit(lambda p, *a: model16.apply(p, *a, method="encode_text"))({"params": params},
                                                                             *x[2:])
  assert out.dtype == jnp.float32 and text.keys.dtype == jnp.float32
  assert float(jnp.abs(out - ref32).max()) < 0.05 * float(jnp.abs(ref32).max())
  init = model16.init(jax.random.key(0), *x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(nn.unbox(init)))


def test_official_initialisation():
  cfg = tiny_cfg()
  params = nn.unbox(build_t2iv(cfg).init(jax.random.key(0), *inputs(cfg))["params"])
  block = params["blocks"]["block_0"]
  assert abs(float(jnp.std(block["mlp"]["gate_proj"]["kernel"])) - 0.02) < 0.003
  assert float(jnp.abs(params["text_proj"]["bias"]).max()) == 0
  np.testing.assert_array_equal(block["attn"]["q_norm"]["weight"], 1)
  assert "bias" not in block["attn"]["q_proj"]


def test_bad_inputs_and_configs_raise():
  cfg = tiny_cfg()
  model = build_t2iv(cfg)
  labels, scale, features, mask = inputs(cfg)
  params = model.init(jax.random.key(0), labels, scale, features, mask)
  text = model.apply(params, features, mask, method="encode_text")
  denoise = lambda *a, **k: model.apply(params, *a, method="denoise", **k)
  with pytest.raises(ValueError, match="labels must be"):
    denoise(labels[..., :3], scale, text)
  with pytest.raises(TypeError, match="integers"):
    denoise(labels.astype(np.float32), scale, text)
  with pytest.raises(ValueError, match="scale"):
    denoise(labels, scale[:1], text)
  with pytest.raises(ValueError, match="encode_text"):
    denoise(labels[:1], scale[:1], text)
  with pytest.raises(ValueError, match="RoPE grid"):  # 80 tokens high at h/w 1/3: uph = 74
    denoise(np.zeros((2, 1, 80, 1, 16), np.int32), scale, text, h_div_w=0.1)
  with pytest.raises(ValueError, match="text features"):
    model.apply(params, features[..., :5], mask, method="encode_text")
  with pytest.raises(ValueError, match="unknown fields"):
    build_t2iv(ml_collections.ConfigDict({**cfg.to_dict(), "num_kv_head": 2}))
  with pytest.raises(ValueError, match="num_kv_heads"):
    build_t2iv(tiny_cfg(num_kv_heads=3))
  with pytest.raises(ValueError, match="block_chunks"):
    build_t2iv(tiny_cfg(block_chunks=3))
  with pytest.raises(ValueError, match="attention_impl"):
    build_t2iv(tiny_cfg(attention_impl="flash"))


def test_one_block_matches_numpy_transcription():
  """Block alone, text pass and visual pass with the text prefix (GQA, 3-D RoPE angles)."""
  cfg = tiny_cfg(depth=2, block_chunks=2)
  sd = ref.random_state_dict(shapes_of(cfg), seed=6)
  params = t2iv_convert.t2iv_params_from_torch(sd, cfg)["blocks"]["block_1"]
  hd = cfg.hidden_size // cfg.num_heads
  block = grn_t2iv.Block(cfg.num_heads, cfg.num_kv_heads, hd,
                         grn_t2iv.mlp_width(cfg.hidden_size, cfg.mlp_ratio))
  rng = np.random.default_rng(0)
  text, visual = (rng.standard_normal((1, n, cfg.hidden_size)).astype(np.float32) for n in (5, 7))
  text_pos = (np.arange(5), np.zeros(5), np.zeros(5))
  visual_pos = (600 + np.arange(7) // 4, np.arange(7) % 4 * 3, np.arange(7) % 2 * 5)
  tables = lambda pos: [t[:, None] for t in layers.rope_3d_tables(*pos, hd)]
  ones = lambda n: jnp.ones((1, n), bool)
  text_out, (k, v) = block.apply({"params": params}, text, None, *tables(text_pos), ones(5))
  vis_out, none = block.apply({"params": params}, visual, (k, v), *tables(visual_pos), ones(12))
  want_text, want_kv = ref.block(sd, "block_chunks.1.module.0", text[0].astype(np.float64),
                                 ref.rope_angles(*text_pos, hd), cfg.num_heads, cfg.num_kv_heads)
  want_vis, _ = ref.block(sd, "block_chunks.1.module.0", visual[0].astype(np.float64),
                          ref.rope_angles(*visual_pos, hd), cfg.num_heads, cfg.num_kv_heads,
                          text_kv=want_kv)
  assert none is None
  np.testing.assert_allclose(text_out[0], want_text, atol=2e-5 * np.abs(want_text).max())
  np.testing.assert_allclose(k[0], want_kv[0], atol=2e-5 * np.abs(want_kv[0]).max())
  np.testing.assert_allclose(vis_out[0], want_vis, atol=2e-5 * np.abs(want_vis).max())


def test_sharded_forward_on_8_devices_equals_one_device():
  """fsdp x tensor sharding of the params (kv heads included) through the config's rules."""
  config = t2iv_configs.get_config("variant=tiny")
  config.mesh.update(data=2, fsdp=2, tensor=2)
  mesh = sharding.make_mesh(config.mesh)
  model = build_t2iv(config.model)
  x = inputs(config.model, batch=4, lengths=(2, 6, 4, 5))
  init = lambda key: model.init(key, *x)
  variables, shardings = sharding.sharded_init(init, mesh, config.sharding_rules,
                                               jax.random.key(0))
  rules = sharding.rules_from_config(config.sharding_rules)
  k_proj = shardings["params"]["blocks"]["block_0"]["attn"]["k_proj"]["kernel"]
  assert k_proj.spec == P("fsdp", "tensor", None)  # ("embed", "kv_heads", "kv")

  def fwd(v, *a):
    with nn.logical_axis_rules(rules):
      return model.apply(v, *a)

  with jax.set_mesh(mesh):
    out = jax.jit(fwd, in_shardings=(shardings,) + (None,) * 4)(variables, *x)
  want = jax.jit(model.apply)(jax.device_get(variables), *x)
  np.testing.assert_allclose(out, want, atol=2e-5)


def test_every_logical_axis_has_a_rule():
  config = t2iv_configs.get_config("variant=2B")
  for scan in (False, True):
    config.model.scan_layers = scan
    shapes = jax.eval_shape(build_t2iv(config.model).init, jax.random.key(0),
                            *inputs(config.model, 1, 1, 2, 2, 3, (3,)))
    names = {a for spec in jax.tree.leaves(nn.get_partition_spec(shapes),
                                           is_leaf=lambda s: isinstance(s, P)) for a in spec}
    assert names - {None} <= {rule[0] for rule in config.sharding_rules}, names
