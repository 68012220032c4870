"""The C2I transformer: official sizes, numpy-reference parity via the converter, layers."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import hbq
from grn_jax.convert import c2i as c2i_convert
from grn_jax.models import build_c2i, layers
from tests.models import c2i_reference


def tiny_cfg(label_mode="ind", **kw):
  cfg = c2i_configs.model_config("tiny", label_mode)
  cfg.update(kw)
  return cfg


def random_state_dict(cfg, seed=0):
  """Official-layout state dict with every tensor random (adaLN and output layers non-zero)."""
  params = jax.eval_shape(lambda: build_c2i(cfg).init(jax.random.key(0), *inputs(cfg, 1)))
  flat = c2i_convert.c2i_params_to_torch(
      jax.tree.map(lambda s: np.zeros(s.shape, np.float32), params["params"]), cfg)
  rng = np.random.default_rng(seed)
  out = {}
  for k, v in flat.items():
    if k.endswith("pos_embed"):
      out[k] = layers.sincos_pos_embed_2d(cfg.hidden_size, cfg.input_size)[None]
    elif "norm" in k:
      out[k] = (1 + 0.2 * rng.standard_normal(v.shape)).astype(np.float32)
    else:
      out[k] = (0.15 * rng.standard_normal(v.shape)).astype(np.float32)
  return out


def init_params(cfg, seed=0):
  model = build_c2i(cfg)
  return jax.jit(lambda k: nn.unbox(model.init(k, *inputs(cfg, 1))["params"]))(
      jax.random.key(seed))


def inputs(cfg, batch, seed=0):
  rng = np.random.default_rng(seed)
  k = hbq.num_classes(cfg.hbq_rounds, cfg.label_mode)
  d = hbq.num_labels(cfg.latent_dim, cfg.hbq_rounds, cfg.label_mode)
  labels = rng.integers(0, k, (batch, cfg.input_size, cfg.input_size, d)).astype(np.int32)
  t = rng.uniform(0, 1, batch).astype(np.float32)
  y = rng.integers(0, cfg.num_classes + 1, batch).astype(np.int32)
  return jnp.asarray(labels), jnp.asarray(t), jnp.asarray(y)


@pytest.mark.parametrize("variant,count", [("B", 130_861_056), ("L", 458_549_472),
                                           ("H", 952_055_104), ("G", 2_006_572_432)])
def test_official_parameter_counts(variant, count):
  cfg = c2i_configs.model_config(variant)
  model = build_c2i(cfg)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jnp.zeros((1, 16, 16, 16), jnp.int32), jnp.zeros((1,)),
                          jnp.zeros((1,), jnp.int32))
  assert sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)) == count


@pytest.mark.parametrize("label_mode", ["ind", "bit"])
@pytest.mark.parametrize("scan", [False, True])
def test_matches_numpy_reference_of_official_model(label_mode, scan):
  cfg = tiny_cfg(label_mode, scan_layers=scan, depth=3)
  sd = random_state_dict(cfg)
  params = c2i_convert.c2i_params_from_torch(sd, cfg)
  labels, t, y = inputs(cfg, 3)
  ours = np.asarray(jax.jit(build_c2i(cfg).apply)({"params": params}, labels, t, y))
  ref = c2i_reference.forward(
      sd, np.asarray(labels).transpose(0, 3, 1, 2), np.asarray(t, np.float64), np.asarray(y),
      classes=hbq.num_classes(cfg.hbq_rounds, label_mode), heads=cfg.num_heads, depth=cfg.depth,
      in_context_len=cfg.in_context_len, in_context_start=cfg.in_context_start)
  assert ours.dtype == np.float32
  assert np.abs(ref).max() > 0.5  # non-trivial logits
  np.testing.assert_allclose(ours, ref.transpose(0, 3, 4, 2, 1), atol=1e-4, rtol=0)


def test_scan_remat_and_unrolled_agree():
  cfg = tiny_cfg(depth=3)
  sd = random_state_dict(cfg, seed=3)
  x = inputs(cfg, 2)
  outs = []
  for scan in (False, True):
    for remat in ("none", "full"):
      c = tiny_cfg(depth=3, scan_layers=scan, remat_policy=remat)
      params = c2i_convert.c2i_params_from_torch(sd, c)
      loss = lambda p, c=c: jnp.sum(build_c2i(c).apply({"params": p}, *x) ** 2)
      val, grad = jax.jit(jax.value_and_grad(loss))(params)
      if scan:  # compare gradients in the unrolled layout
        grad = c2i_convert.c2i_params_from_torch(c2i_convert.c2i_params_to_torch(grad, c),
                                                 tiny_cfg(depth=3))
      outs.append((float(val), grad))
  for val, grad in outs[1:]:
    np.testing.assert_allclose(val, outs[0][0], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-4, atol=1e-5 * float(np.abs(b).max())), grad, outs[0][1])


def test_bfloat16_compute_is_close_and_logits_float32():
  cfg = tiny_cfg()
  params = c2i_convert.c2i_params_from_torch(random_state_dict(cfg), cfg)
  x = inputs(cfg, 2)
  ref = jax.jit(build_c2i(cfg).apply)({"params": params}, *x)
  out = jax.jit(build_c2i(tiny_cfg(dtype="bfloat16")).apply)({"params": params}, *x)
  assert out.dtype == jnp.float32
  assert float(jnp.abs(out - ref).max()) < 0.1 * float(jnp.abs(ref).max())


def test_attention_impls_agree_in_the_c2i_layer():
  """layers.Attention (qk norms, RoPE with unrotated prefix rows) gives the same values and
  gradients through every attention impl; the op itself is tested in tests/models."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 20, 32)), jnp.float32)
  cos, sin = (jnp.asarray(a) for a in layers.rope_tables(8, 4, num_prefix=4))
  outs = {}
  for impl in ("xla", "cudnn", "chunked"):
    attn = layers.Attention(4, impl=impl)
    params = attn.init(jax.random.key(0), x, cos, sin)
    params = jax.tree.map(lambda a: a + 0.1, params)  # non-trivial norms and biases
    outs[impl] = jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(attn.apply(p, x, cos, sin))),
                                    argnums=(0, 1))(params, x)
  assert float(jnp.abs(outs["xla"][1][1]).max()) > 1e-2
  for impl in ("cudnn", "chunked"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 outs["xla"], outs[impl])
  with pytest.raises(ValueError, match="impl"):
    layers.Attention(4, impl="flash").init(jax.random.key(0), x, cos, sin)
  with pytest.raises(ValueError, match="attention_impl"):
    build_c2i(tiny_cfg(attention_impl="flash"))


def test_official_initialisation():
  cfg = tiny_cfg()
  params = init_params(cfg)
  zero = ["final_linear", "final_adaLN_modulation"]
  for name in zero:
    assert all(float(jnp.abs(v).max()) == 0 for v in jax.tree.leaves(params[name]))
  block = params["blocks_pre"]["block_0"]
  assert float(jnp.abs(block["adaLN_modulation"]["kernel"]).max()) == 0
  assert float(jnp.abs(block["attn"]["qkv"]["kernel"]).max()) > 0
  np.testing.assert_allclose(params["pos_embed"][0],
                             layers.sincos_pos_embed_2d(cfg.hidden_size, cfg.input_size))
  assert abs(float(jnp.std(params["y_embedder_table"])) - 0.02) < 0.005
  # xavier uniform on qkv: limit sqrt(6 / (fan_in + fan_out)) = sqrt(6 / (H + 3H)).
  limit = math.sqrt(6 / (4 * cfg.hidden_size))
  assert float(jnp.abs(block["attn"]["qkv"]["kernel"]).max()) <= limit


def test_rope_angles_known_values():
  # head_dim 8: half 4, freqs [1, 1/100]; token (row 2, col 3) -> [2,2,.02,.02,3,3,.03,.03].
  ang = layers.rope_2d_angles(8, 4)
  np.testing.assert_allclose(ang[2 * 4 + 3], [2, 2, .02, .02, 3, 3, .03, .03], rtol=1e-6)
  cos, sin = layers.rope_tables(8, 4, num_prefix=2)
  np.testing.assert_array_equal(cos[:2], 1)
  np.testing.assert_array_equal(sin[:2], 0)
  x = jnp.arange(8.0).reshape(1, 1, 1, 8)
  out = layers.apply_rope(x, jnp.cos(jnp.full((1, 8), .5)), jnp.sin(jnp.full((1, 8), .5)))
  c, s = math.cos(.5), math.sin(.5)
  np.testing.assert_allclose(out[0, 0, 0, :2], [0 * c - 1 * s, 1 * c + 0 * s], rtol=1e-6)


def test_timestep_embedding_cos_first():
  emb = np.asarray(layers.timestep_frequencies(jnp.array([0.0, 0.5])))
  np.testing.assert_allclose(emb[0, :128], 1)
  np.testing.assert_allclose(emb[0, 128:], 0)
  np.testing.assert_allclose(emb[1, 1], math.cos(0.5 * math.exp(-math.log(1e4) / 128)), rtol=1e-6)
  np.testing.assert_allclose(emb[1, 128], math.sin(0.5), rtol=1e-6)


def test_pos_embed_column_half_first():
  pe = layers.sincos_pos_embed_2d(8, 3)  # token (row 1, col 2) at index 5
  np.testing.assert_allclose(pe[5, :4], [math.sin(2), math.sin(2 / 100), math.cos(2),
                                          math.cos(2 / 100)], rtol=1e-6)
  np.testing.assert_allclose(pe[5, 4:], [math.sin(1), math.sin(1 / 100), math.cos(1),
                                          math.cos(1 / 100)], rtol=1e-6)


def test_adaln_chunk_order():
  """A bias only in the gate_msa chunk (index 2) must be the only way attention reaches x."""
  cfg = tiny_cfg(depth=1, in_context_len=0, in_context_start=0)
  params = jax.tree.map(np.asarray, init_params(cfg, 1))
  x = inputs(cfg, 1)
  block = params["blocks_pre"]["block_0"]
  params["final_linear"]["kernel"] = np.ones_like(params["final_linear"]["kernel"])
  apply = jax.jit(build_c2i(cfg).apply)
  base = apply({"params": params}, *x)
  outs = []
  for chunk in range(6):
    bias = np.zeros_like(block["adaLN_modulation"]["bias"])
    bias[chunk] = 1.0
    block["adaLN_modulation"]["bias"] = bias
    outs.append(float(jnp.abs(apply({"params": params}, *x) - base).max()))
  # With zero gates only chunks 2 (gate_msa) and 5 (gate_mlp) change the output.
  assert outs[2] > 1e-3 and outs[5] > 1e-3
  assert max(outs[0], outs[1], outs[3], outs[4]) == 0


def test_bad_inputs_and_configs_raise():
  cfg = tiny_cfg()
  model = build_c2i(cfg)
  labels, t, y = inputs(cfg, 2)
  params = {"params": init_params(cfg)}
  with pytest.raises(ValueError, match="labels must be"):
    model.apply(params, labels[..., :2], t, y)
  with pytest.raises(TypeError, match="integers"):
    model.apply(params, labels.astype(jnp.float32), t, y)
  with pytest.raises(ValueError, match="keep_ratio"):
    model.apply(params, labels, t[:1], y)
  with pytest.raises(ValueError, match="unknown fields"):
    build_c2i(ml_collections.ConfigDict({**tiny_cfg().to_dict(), "hiden_size": 3}))
  with pytest.raises(ValueError, match="label_mode"):
    build_c2i(tiny_cfg(label_mode="index"))
  with pytest.raises(ValueError, match="in_context_start"):
    build_c2i(tiny_cfg(in_context_start=7))
