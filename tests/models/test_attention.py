"""The attention op: every impl against a float64 numpy transcription and against each other
(values and gradients, key masks, segment ids, fully masked rows, grouped-query heads, bias),
the auto rule, input errors, and the chunked impl's memory bound from the compiled program."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax import sharding
from grn_jax.models import attention

IMPLS = ("xla", "cudnn", "chunked", "splash")


def numpy_attention(q, k, v, allowed=None, bias=None, scale=None):
  """float64 transcription: softmax over allowed keys (rows with none -> 0), GQA by repeat."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  groups = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  scale = q.shape[-1]**-0.5 if scale is None else scale
  logits = np.einsum("bnhd,bmhd->bhnm", q, k) * scale
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  if allowed is None:
    allowed = np.ones(logits.shape, bool)
  allowed = np.broadcast_to(allowed, logits.shape)
  logits = np.where(allowed, logits, -np.inf)
  row_max = logits.max(-1, keepdims=True)
  exp = np.where(allowed, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0)), 0)
  total = exp.sum(-1, keepdims=True)
  probs = exp / np.where(total == 0, 1, total)
  return np.einsum("bhnm,bmhd->bnhd", probs, v)


def textbook(q, k, v, allowed=None, bias=None, scale=None):
  """jnp version of the same formula for autodiff gradients (independent of the custom VJPs)."""
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  scale = q.shape[-1]**-0.5 if scale is None else scale
  logits = jnp.einsum("bnhd,bmhd->bhnm", q, k) * scale
  if bias is not None:
    logits = logits + bias
  if allowed is not None:
    logits = jnp.where(allowed, logits, -1e30)
  probs = jax.nn.softmax(logits, axis=-1)
  if allowed is not None:
    probs = probs * jnp.any(allowed, axis=-1, keepdims=True)
  return jnp.einsum("bhnm,bmhd->bnhd", probs, v)


def make_case(seed, batch=2, num_q=37, num_kv=53, heads=4, kv_heads=2, head_dim=16):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((batch, num_q, heads, head_dim)).astype(np.float32)
  k = rng.standard_normal((batch, num_kv, kv_heads, head_dim)).astype(np.float32)
  v = rng.standard_normal((batch, num_kv, kv_heads, head_dim)).astype(np.float32)
  return rng, q, k, v


def masks_case(rng, batch, num_q, num_kv):
  """A key mask and segment ids where id 0 pads both sides and some query ids have no key."""
  kv_mask = rng.uniform(size=(batch, num_kv)) > 0.25
  q_ids = rng.integers(0, 4, (batch, num_q)).astype(np.int32)   # id 3: no key has it
  kv_ids = rng.integers(0, 3, (batch, num_kv)).astype(np.int32)
  allowed = (q_ids[:, None, :, None] == kv_ids[:, None, None, :]) & kv_mask[:, None, None, :]
  return kv_mask, q_ids, kv_ids, allowed


def small_chunks(monkeypatch):
  """Several query and key chunks (with padding) at test sizes."""
  monkeypatch.setattr(attention, "CHUNK_Q", 16)
  monkeypatch.setattr(attention, "CHUNK_KV", 24)


def loss_of(fn):
  weights = jnp.linspace(-1.0, 2.0, 16)
  return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)) * weights)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("masked", [False, True])
def test_impls_match_numpy_and_autodiff(impl, masked, monkeypatch):
  small_chunks(monkeypatch)
  rng, q, k, v = make_case(0 if masked else 1)
  kw, allowed = {}, None
  if masked:
    kv_mask, q_ids, kv_ids, allowed = masks_case(rng, 2, 37, 53)
    assert not allowed.any(-1).all() and allowed.any()  # some fully masked rows
    kw = dict(kv_mask=jnp.asarray(kv_mask), q_segment_ids=jnp.asarray(q_ids),
              kv_segment_ids=jnp.asarray(kv_ids))
  fn = lambda q, k, v: attention.attention(q, k, v, impl=impl, **kw)
  out = np.asarray(jax.jit(fn)(q, k, v))
  ref = numpy_attention(q, k, v, allowed)
  assert out.dtype == np.float32 and np.isfinite(out).all()
  np.testing.assert_allclose(out, ref, atol=2e-6, rtol=1e-5)
  # The tolerance resolves a 1% error.
  assert np.abs(1.01 * out - ref).max() > 2e-6 + 1e-5 * np.abs(ref).max()
  if masked:
    np.testing.assert_array_equal(out[~allowed.any(-1)[:, 0]], 0)

  grads = jax.jit(jax.grad(loss_of(fn), argnums=(0, 1, 2)))(q, k, v)
  want = jax.grad(loss_of(lambda q, k, v: textbook(q, k, v, allowed)), argnums=(0, 1, 2))(q, k, v)
  for got, exp in zip(grads, want):
    assert float(jnp.abs(exp).max()) > 1e-2 and bool(jnp.isfinite(got).all())
    np.testing.assert_allclose(got, exp, atol=2e-5, rtol=1e-4)


def test_bias_and_scale_xla_and_cudnn():
  rng, q, k, v = make_case(2, heads=2, kv_heads=2)
  kv_mask, _, _, _ = masks_case(rng, 2, 37, 53)
  for bias_batch in (1, 2):
    bias = rng.standard_normal((bias_batch, 2, 37, 53)).astype(np.float32)
    allowed = kv_mask[:, None, None, :]
    ref = numpy_attention(q, k, v, allowed, bias, scale=1.0)
    want = jax.grad(lambda q, k, v, b: loss_of(lambda *a: textbook(*a, allowed, b, 1.0))(q, k, v),
                    argnums=(0, 1, 2, 3))(q, k, v, bias)
    for impl in ("xla", "cudnn", "auto"):
      fn = lambda q, k, v, b, impl=impl: attention.attention(
          q, k, v, kv_mask=jnp.asarray(kv_mask), bias=b, scale=1.0, impl=impl)
      np.testing.assert_allclose(jax.jit(fn)(q, k, v, bias), ref, atol=2e-6, rtol=1e-5)
      grads = jax.grad(lambda q, k, v, b, fn=fn: loss_of(lambda *a: fn(*a, b))(q, k, v),
                       argnums=(0, 1, 2, 3))(q, k, v, bias)
      for got, exp in zip(grads, want):
        assert got.shape == exp.shape
        np.testing.assert_allclose(got, exp, atol=2e-5, rtol=1e-4)
  for impl in ("chunked", "splash"):
    with pytest.raises(ValueError, match="no additive bias"):
      attention.attention(q, k, v, bias=bias, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_inputs(impl):
  _, q, k, v = make_case(3)
  ref = numpy_attention(q, k, v)
  out = attention.attention(*(jnp.asarray(a, jnp.bfloat16) for a in (q, k, v)), impl=impl)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.03)


@pytest.mark.parametrize("impl", ["xla", "chunked", "splash"])
def test_all_keys_masked_gives_zeros_and_finite_gradients(impl):
  _, q, k, v = make_case(4, num_q=9, num_kv=11)
  kv_mask = np.ones((2, 11), bool)
  kv_mask[1] = False
  fn = lambda q, k, v: attention.attention(q, k, v, kv_mask=jnp.asarray(kv_mask), impl=impl)
  out = np.asarray(fn(q, k, v))
  np.testing.assert_array_equal(out[1], 0)
  np.testing.assert_allclose(out[0], numpy_attention(q[:1], k[:1], v[:1])[0], atol=2e-6)
  grads = jax.grad(loss_of(fn), argnums=(0, 1, 2))(q, k, v)
  for g in grads:
    assert bool(jnp.isfinite(g).all())
    np.testing.assert_array_equal(g[1], 0)


def test_splash_under_shard_map_on_a_mesh():
  """Batch over ('data', 'fsdp') and heads over 'tensor' through the logical rules."""
  rng, q, k, v = make_case(5, batch=4, num_q=20, num_kv=30, heads=4, kv_heads=2)
  kv_mask, q_ids, kv_ids, allowed = masks_case(rng, 4, 20, 30)
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  rules = (("batch", ("data", "fsdp")), ("act_heads", "tensor"))
  fn = lambda *a: attention.attention(*a[:3], kv_mask=a[3], q_segment_ids=a[4],
                                      kv_segment_ids=a[5], impl="splash")
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    jitted = jax.jit(fn)
    text = jitted.lower(q, k, v, kv_mask, q_ids, kv_ids).as_text()
    out = jitted(q, k, v, kv_mask, q_ids, kv_ids)
  assert "shard_map" in text or "manual" in text
  np.testing.assert_allclose(out, numpy_attention(q, k, v, allowed), atol=2e-6, rtol=1e-5)


def test_chunked_memory_is_bounded():
  """Compiled temp buffers: xla's gradient holds the [H, N, M] float32 probabilities (its
  forward XLA:CPU may fuse into one pass); chunked stays a fraction of one score matrix in both
  passes and grows linearly when N = M doubles."""
  temps = {}
  for n in (4096, 8192):
    spec = jax.ShapeDtypeStruct((1, n, 2, 32), jnp.float32)
    for impl in ("xla", "chunked"):
      fn = lambda q, k, v, impl=impl: attention.attention(q, k, v, impl=impl)
      grad_fn = jax.grad(lambda *a, fn=fn: jnp.sum(fn(*a)), argnums=(0, 1, 2))
      temps[impl, n] = [jax.jit(f).lower(spec, spec, spec).compile().memory_analysis()
                        .temp_size_in_bytes for f in (fn, grad_fn)]
  for n in (4096, 8192):
    scores = 2 * n * n * 4  # bytes of the float32 scores of both heads
    assert temps["xla", n][1] >= scores, temps
  assert max(temps["chunked", 8192]) < 2 * 8192 * 8192 * 4 / 8, temps
  for pass_ in (0, 1):
    assert temps["chunked", 8192][pass_] < 2.5 * temps["chunked", 4096][pass_], temps


def test_auto_rule():
  resolve = attention.resolve_impl
  assert resolve("auto", 256, 256, backend="cpu") == "xla"
  assert resolve("auto", 4097, 4609, backend="cpu") == "chunked"
  assert resolve("auto", 4097, 4609, has_bias=True, backend="cpu") == "xla"
  assert resolve("auto", 256, 256, backend="gpu") == "cudnn"
  assert resolve("auto", 256, 256, has_bias=True, backend="gpu") == "cudnn"
  assert resolve("auto", 256, 256, backend="tpu") == "splash"
  assert resolve("auto", 256, 256, has_bias=True, backend="tpu") == "xla"
  assert resolve("chunked", 8, 8, backend="tpu") == "chunked"
  with pytest.raises(ValueError, match="attention_impl"):
    resolve("flash", 8, 8)


def test_bad_inputs_raise():
  _, q, k, v = make_case(6)
  with pytest.raises(ValueError, match="multiple"):
    attention.attention(q[:, :, :3], k, v)
  with pytest.raises(ValueError, match="kv_mask"):
    attention.attention(q, k, v, kv_mask=jnp.ones((2, 52), bool))
  with pytest.raises(ValueError, match="both"):
    attention.attention(q, k, v, q_segment_ids=jnp.zeros((2, 37), jnp.int32))
  with pytest.raises(ValueError, match="bias"):
    attention.attention(q, k, v, bias=jnp.zeros((2, 4, 37, 52)))
  with pytest.raises(TypeError, match="dtypes"):
    attention.attention(q, k.astype(jnp.bfloat16), v)
