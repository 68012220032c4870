"""The HBQ tokenizer: layouts, resamplers, causality of videos, streaming, tiling, config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tokenizer as tokenizer_configs
from grn_jax.models import build_tokenizer
from grn_jax.models import tokenizer as tok_lib


def tiny_cfg(**kw):
  cfg = tokenizer_configs.tokenizer_config("tiny")  # dim 8, latent 4, dim_mult (1, 2, 2, 2)
  cfg.update(kw)
  return cfg


def random_params(cfg, seed=0):
  """Random params (no compile: shapes from eval_shape) with non-trivial norms, resampler time
  convs and a non-zero attention projection (zero-initialised officially)."""
  shapes = jax.eval_shape(build_tokenizer(cfg).init, jax.random.key(0),
                          jnp.zeros((1, 5, 16, 16, 3)))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if name.endswith("['gamma']"):
      return 1 + 0.3 * rng.standard_normal(leaf.shape, np.float32)
    if name.endswith("['bias']"):
      return 0.05 * rng.standard_normal(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return rng.standard_normal(leaf.shape, np.float32) / np.sqrt(fan_in)
  return jax.tree.map(jnp.asarray, jax.tree_util.tree_map_with_path(draw, shapes))


@pytest.fixture(scope="module")
def tiny():
  cfg = tiny_cfg()
  tok = build_tokenizer(cfg)
  params = random_params(cfg)
  enc = jax.jit(lambda p, x: tok.apply(p, x, method="encode"))
  dec = jax.jit(lambda p, z: tok.apply(p, z, method="decode"))
  return cfg, tok, params, enc, dec


def test_patchify_channel_order():
  x = np.random.default_rng(0).normal(size=(1, 1, 4, 6, 3)).astype(np.float32)
  p = np.asarray(tok_lib.patchify(jnp.asarray(x)))
  for c in range(3):
    for wo in range(2):
      for ho in range(2):
        np.testing.assert_array_equal(p[0, 0, 1, 2, c * 4 + wo * 2 + ho], x[0, 0, 2 + ho, 4 + wo, c])
  np.testing.assert_array_equal(tok_lib.unpatchify(jnp.asarray(p)), x)


def test_rms_norm_is_l2_normalise_times_sqrt_c():
  x = jnp.array([[[[[3.0, 4.0]]]]])
  out = tok_lib.RMSNormL2().apply({"params": {"gamma": jnp.array([1.0, 2.0])}}, x)
  np.testing.assert_allclose(out[0, 0, 0, 0], [0.6 * np.sqrt(2), 0.8 * np.sqrt(2) * 2], rtol=1e-6)
  zero = tok_lib.RMSNormL2().apply({"params": {"gamma": jnp.ones(2)}}, jnp.zeros((1, 2)))
  np.testing.assert_array_equal(zero, 0.0)  # eps on the norm: no NaN for an all-zero pixel


def _avg_down_reference(x, out_c, ft, fs):
  """Direct transcription of GRN-SPEC §C.1 on [T, H, W, C]."""
  t, h, w, c = x.shape
  pad = (ft - t % ft) % ft
  x = np.concatenate([np.zeros((pad, h, w, c)), x])
  t = x.shape[0]
  g = c * ft * fs * fs // out_c
  out = np.zeros((t // ft, h // fs, w // fs, out_c))
  for o in range(out_c):
    for n in range(o * g, (o + 1) * g):
      ci, rest = divmod(n, ft * fs * fs)
      to, rest = divmod(rest, fs * fs)
      ho, wo = divmod(rest, fs)
      out[..., o] += x[to::ft, ho::fs, wo::fs, ci][:t // ft, :h // fs, :w // fs] / g
  return out


def _dup_up_reference(x, out_c, ft, fs):
  t, h, w, c = x.shape
  r = out_c * ft * fs * fs // c
  out = np.zeros((t * ft, h * fs, w * fs, out_c))
  for o in range(out_c):
    for a in range(ft):
      for b in range(fs):
        for d in range(fs):
          out[a::ft, b::fs, d::fs, o] = x[..., (o * ft * fs * fs + (a * fs + b) * fs + d) // r]
  return out[ft - 1:]


@pytest.mark.parametrize("cin,cout,ft,fs,t", [(4, 4, 1, 2, 1), (4, 8, 2, 2, 1), (4, 8, 2, 2, 5),
                                              (8, 8, 1, 1, 3)])
def test_avg_down_matches_reference(cin, cout, ft, fs, t):
  x = np.random.default_rng(1).normal(size=(t, 4, 4, cin))
  out = np.asarray(tok_lib.avg_down(jnp.asarray(x[None]), cout, ft, fs))[0]
  np.testing.assert_allclose(out, _avg_down_reference(x, cout, ft, fs), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cin,cout,ft,fs,t", [(8, 8, 2, 2, 1), (8, 8, 2, 2, 3), (8, 4, 1, 2, 2)])
def test_dup_up_matches_reference(cin, cout, ft, fs, t):
  x = np.random.default_rng(2).normal(size=(t, 3, 3, cin))
  out = np.asarray(tok_lib.dup_up(jnp.asarray(x[None]), cout, ft, fs))[0]
  np.testing.assert_allclose(out, _dup_up_reference(x, cout, ft, fs), rtol=1e-6)


def test_causal_conv_matches_numpy():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(1, 3, 4, 4, 2)).astype(np.float32)
  conv = tok_lib.CausalConv3d(3)
  params = conv.init(jax.random.key(0), jnp.asarray(x))
  out = np.asarray(conv.apply(params, jnp.asarray(x)))
  w, b = np.asarray(params["params"]["kernel"]), np.asarray(params["params"]["bias"])
  xp = np.pad(x, ((0, 0), (2, 0), (1, 1), (1, 1), (0, 0)))
  ref = np.zeros_like(out) + b
  for t in range(3):
    for i in range(4):
      for j in range(4):
        ref[0, t, i, j] += np.einsum("abcio,abci->o", w, xp[0, t:t + 3, i:i + 3, j:j + 3])
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# Every test below uses these shapes, so each jitted encode/decode compiles only a few times.
VIDEO = (2, 21, 32, 48, 3)   # latent (2, 6, 2, 3, 4)


@pytest.fixture(scope="module")
def video(tiny):
  _, _, params, enc, dec = tiny
  v = jax.random.uniform(jax.random.key(1), VIDEO, minval=-1, maxval=1)
  z = enc(params, v)
  return v, z, dec(params, z)


def test_shapes_range_and_image_equals_single_frame_video(tiny, video):
  _, _, params, enc, dec = tiny
  v, z_video, _ = video
  x = v[:, 0]
  z = enc(params, x)
  assert z.shape == (2, 2, 3, 4) and float(jnp.abs(z).max()) < 1
  np.testing.assert_allclose(enc(params, x[:, None])[:, 0], z, atol=1e-6)
  np.testing.assert_allclose(z_video[:, 0], z, atol=1e-6)  # frame 0 is encoded alone
  assert float(jnp.abs(z[0] - z[1]).max()) > 1e-3
  r = dec(params, z)
  assert r.shape == (2, 32, 48, 3) and r.dtype == jnp.float32
  np.testing.assert_allclose(dec(params, z[:, None])[:, 0], r, atol=1e-5)


def test_video_is_causal_like_the_chunked_official_execution(tiny, video):
  """Frames 0..4j encode to latent frames 0..j of the whole video, and decode back likewise."""
  _, _, params, enc, dec = tiny
  v, z, r = video
  assert z.shape == (2, 6, 2, 3, 4) and r.shape == VIDEO
  np.testing.assert_allclose(enc(params, v[:, :5]), z[:, :2], atol=1e-5)
  np.testing.assert_allclose(dec(params, z[:, :2]), r[:, :5], atol=1e-4)
  # Changing a later frame never changes earlier latents (no future frame is seen).
  z2 = enc(params, v.at[:, 6].set(0.0))
  np.testing.assert_allclose(z2[:, :2], z[:, :2], atol=1e-6)
  assert float(jnp.abs(z2[:, 2] - z[:, 2]).max()) > 1e-4


def _pixel_local(params):
  """Keeps only the centre tap of every spatial kernel and zeroes the attention projection, so
  that every output pixel depends on its own latent token only."""
  def local(path, x):
    name = jax.tree_util.keystr(path)
    if "proj" in name and "kernel" in name:
      return jnp.zeros_like(x)
    if name.endswith("['kernel']") and x.ndim >= 4 and x.shape[-4] == 3 and x.shape[-3] == 3:
      mask = jnp.zeros(x.shape[-4:-2]).at[1, 1].set(1.0)
      return x * mask.reshape(mask.shape + (1, 1))
    return x
  return jax.tree_util.tree_map_with_path(local, params)


def test_spatial_tiling_exact_for_local_decoder_and_seams_shrink_with_overlap(tiny):
  _, _, params, _, dec = tiny
  z = jax.random.uniform(jax.random.key(2), (1, 8, 8, 4), minval=-1, maxval=1)
  tiled = {ov: jax.jit(lambda p, z, t=build_tokenizer(tiny_cfg(tile_latent=4, tile_overlap=ov)):
                       t.apply(p, z, method="decode")) for ov in (0, 2)}
  # A pixel-local decoder has no seams to hide: tiles + blending reproduce it exactly, which
  # checks tile placement and that the blend weights sum to one.
  local = _pixel_local(params)
  np.testing.assert_allclose(tiled[2](local, z), dec(local, z), atol=2e-5)
  # With conv receptive fields (attention off), tiles differ from the whole decode near their
  # edges; overlapping, blended tiles reduce that error.
  conv_only = jax.tree_util.tree_map_with_path(
      lambda path, x: 0 * x if "proj" in jax.tree_util.keystr(path) else x, params)
  ref = dec(conv_only, z)
  err = {ov: float(jnp.abs(f(conv_only, z) - ref).mean()) for ov, f in tiled.items()}
  assert 1e-3 < err[2] < 0.9 * err[0] < 0.9 * float(jnp.abs(ref).mean()), err
  with pytest.raises(ValueError, match="tile_overlap"):
    build_tokenizer(tiny_cfg(tile_latent=4, tile_overlap=4))


def test_tiling_with_streamed_video_is_exact_for_a_pixel_local_decoder(tiny):
  _, _, params, _, dec = tiny
  z = jax.random.uniform(jax.random.key(4), (1, 3, 3, 5, 4), minval=-1, maxval=1)
  local = _pixel_local(params)
  both = build_tokenizer(tiny_cfg(tile_latent=3, tile_overlap=1, frame_chunk=1))
  out = jax.jit(lambda p, z: both.apply(p, z, method="decode"))(local, z)
  assert out.shape == (1, 9, 48, 80, 3)
  np.testing.assert_allclose(out, dec(local, z), atol=2e-5)


def test_streamed_execution_equals_whole_sequence(tiny, video):
  """frame_chunk > 0 runs the official chunked protocol: the first frame alone, then cached chunks
  in a lax.scan, a shorter tail after it (here 5 latent frames = 2 scan steps of 2 + a tail of 1;
  the encoder: 20 frames = 2 x 8 + 4). It must equal the whole-sequence formulation."""
  _, _, params, _, dec = tiny
  v, z, r = video
  stream = build_tokenizer(tiny_cfg(frame_chunk=2))
  z_s = jax.jit(lambda p, x: stream.apply(p, x, method="encode"))(params, v)
  r_s = jax.jit(lambda p, z: stream.apply(p, z, method="decode"))(params, z)
  assert z_s.shape == z.shape and r_s.shape == r.shape
  np.testing.assert_allclose(z_s, z, atol=2e-6)
  np.testing.assert_allclose(r_s, r, atol=2e-5)
  assert float(jnp.abs(r[:, 5:13] - r[:, :8]).max()) > 1e-2  # frames differ: a real video


def test_streamed_init_matches_whole_init():
  cfg = tiny_cfg(frame_chunk=1, tile_latent=2, tile_overlap=1)
  x = jnp.zeros((1, 5, 32, 32, 3))
  shapes = jax.eval_shape(build_tokenizer(cfg).init, jax.random.key(0), x)
  whole = jax.eval_shape(build_tokenizer(tiny_cfg()).init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, whole)
  assert set(shapes) == {"params"}  # no cache collection leaks into the variables


def test_bad_inputs_and_config(tiny):
  _, _, params, enc, dec = tiny
  with pytest.raises(ValueError, match="T = 1 \\+ 4k"):
    enc(params, jnp.zeros((1, 4, 32, 32, 3)))
  with pytest.raises(ValueError, match="divisible by 16"):
    enc(params, jnp.zeros((1, 24, 32, 3)))
  with pytest.raises(ValueError, match="channels"):
    dec(params, jnp.zeros((1, 2, 2, 5)))
  with pytest.raises(ValueError, match="unknown fields \\['dimm'\\]"):
    build_tokenizer(tiny_cfg(dimm=3))
  with pytest.raises(ValueError, match="missing fields \\['dtype'\\]"):
    cfg = tiny_cfg()
    del cfg["dtype"]
    build_tokenizer(cfg)
  with pytest.raises(ValueError, match="frame_chunk"):
    build_tokenizer(tiny_cfg(frame_chunk=-1))
  with pytest.raises(ValueError, match="temporal_downsample"):
    build_tokenizer(tiny_cfg(temporal_downsample=(False, False, True)))
  build_tokenizer(tiny_cfg(checkpoint="x.ckpt"))  # checkpoint is the loader's field: accepted


def test_bfloat16_compute_tracks_float32(tiny):
  _, _, params, enc, dec = tiny
  x = jax.random.uniform(jax.random.key(5), (1, 16, 32, 3), minval=-1, maxval=1)
  bf16 = build_tokenizer(tiny_cfg(dtype="bfloat16"))
  z = jax.jit(lambda p, x: bf16.apply(p, x, method="encode"))(params, x)
  r = jax.jit(lambda p, z: bf16.apply(p, z, method="decode"))(params, z)
  assert z.dtype == r.dtype == jnp.float32
  z32 = enc(params, x)
  assert float(jnp.abs(z - z32).max()) < 0.05 * float(jnp.abs(z32).max())
  r32 = dec(params, z32)
  assert float(jnp.abs(r - r32).max()) < 0.1 * float(jnp.abs(r32).max())
