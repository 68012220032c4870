"""The HBQ tokenizer: layouts, resamplers, causality of videos, tiling, converter."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from grn_jax.convert import common
from grn_jax.convert import tokenizer as tok_convert
from grn_jax.models import build_tokenizer
from grn_jax.models import tokenizer as tok_lib


def tiny_cfg(**kw):
  cfg = ml_collections.ConfigDict(dict(
      dim=8, dec_dim=8, latent_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
      temporal_downsample=(False, True, True), dtype="float32"))
  cfg.update(kw)
  return cfg


def random_params(cfg, seed=0):
  """Random params with non-trivial norms and a non-zero attention projection."""
  tok = build_tokenizer(cfg)
  params = jax.jit(lambda k: tok.init(k, jnp.zeros((1, 5, 32, 32, 3))))(jax.random.key(seed))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x * (1 + 0.3 * jax.random.normal(k, x.shape))
                                   + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


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
  y = nn.Module  # noqa
  out = tok_lib.RMSNormL2().apply({"params": {"gamma": jnp.array([1.0, 2.0])}}, x)
  np.testing.assert_allclose(out[0, 0, 0, 0], [0.6 * np.sqrt(2), 0.8 * np.sqrt(2) * 2], rtol=1e-6)


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


def test_shapes_range_and_image_equals_single_frame_video(tiny):
  cfg, _, params, enc, dec = tiny
  x = jax.random.uniform(jax.random.key(0), (2, 32, 48, 3), minval=-1, maxval=1)
  z = enc(params, x)
  assert z.shape == (2, 2, 3, 4) and float(jnp.abs(z).max()) < 1
  np.testing.assert_allclose(enc(params, x[:, None])[:, 0], z, atol=1e-6)
  r = dec(params, z)
  assert r.shape == (2, 32, 48, 3) and r.dtype == jnp.float32
  np.testing.assert_allclose(dec(params, z[:, None])[:, 0], r, atol=1e-5)


def test_video_is_causal_like_the_chunked_official_execution(tiny):
  """Frames 0..4j encode to latent frames 0..j of the whole video, and decode back likewise."""
  _, _, params, enc, dec = tiny
  v = jax.random.uniform(jax.random.key(1), (1, 9, 32, 32, 3), minval=-1, maxval=1)
  z = enc(params, v)
  assert z.shape == (1, 3, 2, 2, 4)
  np.testing.assert_allclose(enc(params, v[:, :5]), z[:, :2], atol=1e-5)
  np.testing.assert_allclose(enc(params, v[:, :1])[:, 0], enc(params, v[:, 0]), atol=1e-6)
  r = dec(params, z)
  assert r.shape == (1, 9, 32, 32, 3)
  np.testing.assert_allclose(dec(params, z[:, :2]), r[:, :5], atol=1e-4)
  # Changing a later frame never changes earlier latents (no future frame is seen).
  v2 = v.at[:, 6].set(0.0)
  z2 = enc(params, v2)
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


def test_spatial_tiling_off_exact_on_bounded(tiny):
  cfg, _, params, _, dec = tiny
  z = jax.random.uniform(jax.random.key(2), (1, 6, 6, 4), minval=-1, maxval=1)
  ref = dec(params, z)
  whole = build_tokenizer(tiny_cfg(tile_latent=8))  # tile larger than the latent: untouched
  np.testing.assert_allclose(whole.apply(params, z, method="decode"), ref, atol=1e-5)
  tiled = build_tokenizer(tiny_cfg(tile_latent=4, tile_overlap=2))
  tiled_dec = jax.jit(lambda p, z: tiled.apply(p, z, method="decode"))
  # A pixel-local decoder has no seams to hide: tiles + blending reproduce it exactly, which
  # checks tile placement and that the blend weights sum to one.
  local = _pixel_local(params)
  np.testing.assert_allclose(tiled_dec(local, z), dec(local, z), atol=2e-5)
  # With the full receptive field the seam error is bounded by the range of the tiles.
  out = tiled_dec(params, z)
  assert float(jnp.abs(out).max()) <= 1.5 * float(jnp.abs(ref).max())
  with pytest.raises(ValueError, match="tile_overlap"):
    build_tokenizer(tiny_cfg(tile_latent=4, tile_overlap=4)).apply(params, z, method="decode")


def test_frame_chunked_decode_exact_for_frame_local_and_bounded(tiny):
  _, _, params, _, dec = tiny
  z = jax.random.uniform(jax.random.key(3), (1, 5, 2, 2, 4), minval=-1, maxval=1)
  ref = dec(params, z)
  chunked = build_tokenizer(tiny_cfg(frame_chunk=2, frame_context=1))
  chunked_dec = jax.jit(lambda p, z: chunked.apply(p, z, method="decode"))
  out = chunked_dec(params, z)
  assert out.shape == ref.shape == (1, 17, 32, 32, 3)
  np.testing.assert_allclose(out[:, :5], ref[:, :5], atol=1e-5)  # first chunk is exact
  assert float(jnp.abs(out).max()) <= 1.5 * float(jnp.abs(ref).max())
  # Keeping only the newest temporal tap of every kernel makes each output frame depend on one
  # latent frame: chunks + context then reproduce the whole decode exactly.
  def frame_local(path, x):
    if jax.tree_util.keystr(path).endswith("['kernel']") and x.ndim == 5 and x.shape[0] == 3:
      return x.at[:2].set(0.0)
    return x
  local = jax.tree_util.tree_map_with_path(frame_local, params)
  np.testing.assert_allclose(chunked_dec(local, z), dec(local, z), atol=2e-5)


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


def test_converter_round_trip_and_errors(tiny):
  cfg, tok, params, enc, _ = tiny
  sd = tok_convert.tokenizer_params_to_torch(params["params"], cfg)
  assert "encoder.downsamples.1.downsamples.1.time_conv.weight" in sd
  assert sd["decoder.upsamples.0.upsamples.2.time_conv.weight"].shape == (32, 16, 3, 1, 1)
  assert sd["encoder.middle.1.norm.gamma"].shape == (16, 1, 1)
  back = tok_convert.tokenizer_params_from_torch(sd, cfg)
  jax.tree.map(np.testing.assert_array_equal, back, jax.tree.map(np.asarray, params["params"]))
  del sd["conv2.bias"]
  sd["decoder.head.2.weight"] = sd["decoder.head.2.weight"][:5]
  sd["encoder.extra"] = np.zeros(1)
  with pytest.raises(common.CheckpointMismatchError) as err:
    tok_convert.tokenizer_params_from_torch(sd, cfg)
  msg = str(err.value)
  assert "conv2.bias" in msg and "encoder.extra" in msg and "decoder.head.2.weight" in msg


def test_released_key_count():
  cfg = ml_collections.ConfigDict(dict(dim=160, dec_dim=256, latent_dim=16, dim_mult=(1, 2, 4, 4),
                                       num_res_blocks=2, temporal_downsample=(False, True, True),
                                       dtype="float32"))
  entries = tok_convert._entries(cfg)  # pylint: disable=protected-access
  assert len(entries) == 196
  count = sum(int(np.prod(e[2])) for e in entries)
  assert abs(count - 702.69e6) < 0.01e6  # GRN-PARAM-SHAPES §1: z=16 -> 702.69M
