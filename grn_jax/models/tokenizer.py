"""The HBQ tokenizer: a Wan-2.2-style causal 3-D conv autoencoder with a tanh latent (§C).

  encode: images [B, H, W, 3] or videos [B, T, H, W, 3] (T = 1 + 4k) in [-1, 1]
          -> latents [B, H/16, W/16, d] or [B, 1 + k, H/16, W/16, d] in (-1, 1)
  decode: the inverse map (no clamp inside; callers clamp).

Channels-last throughout. The official code (HBQ_Tokenizer, a WanVAE_) runs videos chunk by
chunk: the first frame alone, then 4 frames at a time, every causal conv prepending the last two
input frames of the previous chunk (its "feature cache"); the decoder runs one latent frame at a
time. We implement both executions with the same parameters:

* whole sequence (default, one program per shape): every piece of the chunked execution has an
  exact whole-sequence form --
  - causal 3x3x3 convs: the cache of the last two input frames equals zero front padding;
  - downsample3d: chunk 0 skips the temporal conv, later chunks prepend the previous chunk's last
    frame, so out = [x_0, conv_t(stride 2, no padding)(x)];
  - upsample3d ("Rep" protocol): frame 0 skips the temporal conv, later frames see a causal conv
    whose history starts after frame 0: out = [x_0, interleave(conv_t(causal)(x_1:))];
  - AvgDown3D pads one zero frame in front of the odd first chunk (= of the whole sequence);
    DupUp3D drops the first repeated frame of the first chunk (= of the whole sequence).
* streamed (`frame_chunk > 0`): the official protocol itself, with every cache held in the
  flax 'cache' collection and carried through a `lax.scan` over chunks (the first chunk, of one
  frame, runs before the scan). Memory then scales with the chunk, not the clip.
tests/test_tokenizer.py checks that the two agree. Both were also checked against the official
PyTorch code outside the project (random weights, CPU; latents within 1e-6).
"""

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import config_check

Dtype = Any
TOKENIZER_FIELDS = ("dim", "dec_dim", "latent_dim", "dim_mult", "num_res_blocks",
                    "temporal_downsample", "dtype")
# Weights (read by grn_jax/tokenizer_io.py) and execution switches.
IO_FIELDS = ("checkpoint", "random_init")
EXECUTION_FIELDS = ("frame_chunk", "tile_latent", "tile_overlap")
CACHE = "cache"  # flax collection that holds the per-conv frame caches when streaming


def _torch_conv_init(fan_in: int):
  """PyTorch's default Conv init (kaiming uniform, a=sqrt(5)) for kernels and biases."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def conv2d(x, kernel, stride: int = 1, padding=((1, 1), (1, 1))):
  """x [N, H, W, Cin], kernel [kh, kw, Cin, Cout] -> [N, H', W', Cout]."""
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fold_frames(fn: Callable, x):
  """Applies a per-image fn to every frame of x [B, T, H, W, C]."""
  b, t = x.shape[:2]
  y = fn(x.reshape(b * t, *x.shape[2:]))
  return y.reshape(b, t, *y.shape[1:])


def _streaming(module: nn.Module) -> bool:
  """True inside `stream_chunks` (an apply with the 'cache' collection mutable; init makes every
  collection mutable, and initialises the whole-sequence form)."""
  return module.is_mutable_collection(CACHE) and not module.is_initializing()


def _cached_frames(module: nn.Module, x, frames: int):
  """Streaming: (the `frames` cached input frames, True when this is the first chunk)."""
  fresh = not module.has_variable(CACHE, "frames")
  var = module.variable(CACHE, "frames", jnp.zeros, (x.shape[0], frames) + x.shape[2:], x.dtype)
  return var, fresh


class CausalConv3d(nn.Module):
  """Official CausalConv3d: 2 past frames, no future frame; spatial padding k // 2.

  Kernel [kt, kh, kw, in, out]. Whole sequence: zero frames in front. Streaming: the last kt - 1
  input frames of the previous chunk in front (zeros before the first chunk).
  """
  features: int
  kernel: tuple[int, int, int] = (3, 3, 3)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, H, W, Cin] -> [B, T, H, W, features]
    kt, kh, kw = self.kernel
    cin = x.shape[-1]
    fan_in = cin * kt * kh * kw
    w = self.param("kernel", _torch_conv_init(fan_in), (kt, kh, kw, cin, self.features))
    b = self.param("bias", _torch_conv_init(fan_in), (self.features,))
    t = x.shape[1]
    first = True
    if kt > 1 and _streaming(self):
      cache, first = _cached_frames(self, x, kt - 1)
      xp = jnp.concatenate([cache.value, x], axis=1)
      cache.value = xp[:, -(kt - 1):]
    else:
      xp = jnp.pad(x, ((0, 0), (kt - 1, 0), (0, 0), (0, 0), (0, 0)))
    pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    out = 0.0
    for tap in range(kt):
      if first and t == 1 and tap < kt - 1:
        continue  # a lone first frame only meets zeros in the earlier taps
      kernel = w[tap].astype(self.dtype)
      out = out + fold_frames(lambda f, k=kernel: conv2d(f, k, 1, pad), xp[:, tap:tap + t])
    return out + b.astype(self.dtype)


class Conv2d(nn.Module):
  """Per-frame 2-D conv (attention projections and the resample convs). Kernel [kh, kw, in, out]."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: Any = ((1, 1), (1, 1))
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, H, W, Cin]
    k, cin = self.kernel_size, x.shape[-1]
    w = self.param("kernel", _torch_conv_init(cin * k * k), (k, k, cin, self.features))
    b = self.param("bias", _torch_conv_init(cin * k * k), (self.features,))
    if k == 1:
      return jnp.einsum("bthwc,co->bthwo", x, w[0, 0].astype(self.dtype)) + b.astype(self.dtype)
    if self.stride > 1:
      # Strided convs as one matmul per tap on strided slices of the padded input: XLA:CPU's
      # strided conv ran ~8x slower than this inside the encoder (same result to rounding).
      xp = jnp.pad(x, ((0, 0), (0, 0)) + tuple(self.padding) + ((0, 0),))
      h_out = (xp.shape[2] - k) // self.stride + 1
      w_out = (xp.shape[3] - k) // self.stride + 1
      out = b.astype(self.dtype)
      for i in range(k):
        for j in range(k):
          tap = xp[:, :, i:i + self.stride * (h_out - 1) + 1:self.stride,
                   j:j + self.stride * (w_out - 1) + 1:self.stride]
          out = out + jnp.einsum("bthwc,co->bthwo", tap, w[i, j].astype(self.dtype))
      return out
    return fold_frames(lambda f: conv2d(f, w.astype(self.dtype), self.stride, self.padding),
                       x) + b.astype(self.dtype)


class TimeConv(nn.Module):
  """Temporal (3, 1, 1) conv of the resamplers (official `time_conv`), kernel [3, 1, 1, in, out].

  mode='down' (downsample3d): stride 2, no padding, on [last frame of the previous chunk, chunk];
  the first chunk skips it. mode='up' (upsample3d): stride 1, causal, its history starting after
  the first chunk, which skips it; each output frame's 2C channels become two frames.
  """
  features: int
  mode: str
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, first_chunk: bool):  # [B, T, H, W, C]
    cin = x.shape[-1]
    w = self.param("kernel", _torch_conv_init(cin * 3), (3, 1, 1, cin, self.features))
    b = self.param("bias", _torch_conv_init(cin * 3), (self.features,))
    history = 1 if self.mode == "down" else 2
    if _streaming(self):
      cache, _ = _cached_frames(self, x, history)
      if first_chunk:
        # Chunk 0 passes; 'down' then keeps its last frame, 'up' an empty (zero) history.
        if self.mode == "down":
          cache.value = x[:, -1:]
        return x
      xp = jnp.concatenate([cache.value, x], axis=1)
      cache.value = xp[:, -history:]
      return self._conv(xp, w, b)
    if x.shape[1] == 1:
      return x
    if self.mode == "down":
      return jnp.concatenate([x[:, :1], self._conv(x, w, b)], axis=1)
    rest = jnp.pad(x[:, 1:], ((0, 0), (2, 0), (0, 0), (0, 0), (0, 0)))
    return jnp.concatenate([x[:, :1], self._conv(rest, w, b)], axis=1)

  def _conv(self, xp, w, b):
    """Valid temporal conv of the padded xp; 'up' interleaves the two halves in time."""
    stride = 2 if self.mode == "down" else 1
    t_out = (xp.shape[1] - 3) // stride + 1
    out = b.astype(self.dtype)
    for tap in range(3):
      frames = xp[:, tap:tap + stride * (t_out - 1) + 1:stride]
      out = out + jnp.einsum("bthwc,co->bthwo", frames, w[tap, 0, 0].astype(self.dtype))
    if self.mode == "up":
      bb, t, h, ww, _ = out.shape
      c = self.features // 2
      out = out.reshape(bb, t, h, ww, 2, c).transpose(0, 1, 4, 2, 3, 5)
      out = out.reshape(bb, 2 * t, h, ww, c)
    return out


class RMSNormL2(nn.Module):
  """Official RMS_norm: L2-normalise over channels (eps 1e-12 on the norm) * sqrt(C) * gamma."""

  @nn.compact
  def __call__(self, x):  # [..., C]
    gamma = self.param("gamma", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
    y = x32 / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * gamma
    return y.astype(x.dtype)


class ResidualBlock(nn.Module):
  """rms -> silu -> causal conv -> rms -> silu -> causal conv, plus a (1x1x1 conv) shortcut."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, H, W, Cin] -> [B, T, H, W, features]
    h = x
    if x.shape[-1] != self.features:
      h = CausalConv3d(self.features, (1, 1, 1), self.dtype, name="shortcut")(x)
    y = nn.silu(RMSNormL2(name="norm1")(x))
    y = CausalConv3d(self.features, dtype=self.dtype, name="conv1")(y)
    y = nn.silu(RMSNormL2(name="norm2")(y))
    y = CausalConv3d(self.features, dtype=self.dtype, name="conv2")(y)
    return y + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over the H*W positions of every frame (official AttentionBlock)."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, T, H, W, C]
    c = x.shape[-1]
    b, t, hh, ww = x.shape[:4]
    y = RMSNormL2(name="norm")(x)
    qkv = Conv2d(3 * c, 1, padding="VALID", dtype=self.dtype, name="to_qkv")(y)
    qkv = qkv.reshape(b * t, hh * ww, 3, 1, c)
    out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    out = out.reshape(b, t, hh, ww, c)
    return x + Conv2d(c, 1, padding="VALID", dtype=self.dtype, name="proj")(out)


def avg_down(x, out_channels: int, factor_t: int, factor_s: int):
  """Official AvgDown3D on [B, T, H, W, C] (zero front padding of T to a multiple of factor_t).

  Space/time-to-depth with index c*(ft*fs*fs) + (t_off*fs + h_off)*fs + w_off, then the mean of
  consecutive groups of in*ft*fs^2/out channels.
  """
  b, t, h, w, c = x.shape
  pad_t = (factor_t - t % factor_t) % factor_t
  x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
  t = (t + pad_t) // factor_t
  x = x.reshape(b, t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # [B, T', H', W', C, ft, fs, fs]
  x = x.reshape(b, t, h // factor_s, w // factor_s, out_channels, -1)
  return x.mean(axis=-1)


def dup_up(x, out_channels: int, factor_t: int, factor_s: int, first_chunk: bool = True):
  """Official DupUp3D on [B, T, H, W, C]; the first chunk drops its first factor_t - 1 frames.

  out[o, t*ft + a, h*fs + b, w*fs + c] = x[(o*ft*fs^2 + (a*fs + b)*fs + c) // r, t, h, w] with
  r = out*ft*fs^2/in channel repeats.
  """
  b, t, h, w, c = x.shape
  repeats = out_channels * factor_t * factor_s * factor_s // c
  x = jnp.repeat(x, repeats, axis=-1)
  x = x.reshape(b, t, h, w, out_channels, factor_t, factor_s, factor_s)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)  # [B, T, ft, H, fs, W, fs, C]
  x = x.reshape(b, t * factor_t, h * factor_s, w * factor_s, out_channels)
  return x[:, factor_t - 1:] if first_chunk else x


class _Coder(nn.Module):
  """Fields and shared pieces of the encoder and the decoder (`temporal[i]`: level i resamples
  time, in the order the levels run)."""
  dim: int
  latent_dim: int
  dim_mult: tuple[int, ...]
  num_res_blocks: int
  temporal: tuple[bool, ...]
  dtype: Dtype = jnp.float32

  def _resamples_time(self, level: int) -> bool:
    return bool(self.temporal[level]) if level < len(self.temporal) else False

  def _middle(self, x, dim: int):
    """The middle blocks (residual, attention, residual); called from a compact method."""
    x = ResidualBlock(dim, self.dtype, name="middle_0")(x)
    x = AttentionBlock(self.dtype, name="middle_attn")(x)
    return ResidualBlock(dim, self.dtype, name="middle_2")(x)


class Encoder(_Coder):
  """Encoder3d + conv1 of WanVAE_: patchified video [B, T, H/2, W/2, 12] -> [B, T', h, w, 2z]."""

  @nn.compact
  def __call__(self, x, first_chunk: bool = True):
    dims = [self.dim * u for u in (1,) + tuple(self.dim_mult)]
    x = CausalConv3d(dims[0], dtype=self.dtype, name="conv1")(x)
    last = len(self.dim_mult) - 1
    for i, dout in enumerate(dims[1:]):
      t_down = self._resamples_time(i)
      down = i != last
      shortcut = avg_down(x, dout, 2 if t_down else 1, 2 if down else 1)
      y = x
      for j in range(self.num_res_blocks):
        y = ResidualBlock(dout, self.dtype, name=f"down_{i}_res_{j}")(y)
      if down:
        # ZeroPad2d(right 1, bottom 1) + 3x3 stride-2 conv, per frame.
        y = Conv2d(dout, 3, 2, ((0, 1), (0, 1)), self.dtype, name=f"down_{i}_resample")(y)
        if t_down:
          y = TimeConv(dout, "down", self.dtype, name=f"down_{i}_time_conv")(y, first_chunk)
      x = y + shortcut
    x = self._middle(x, dims[-1])
    x = nn.silu(RMSNormL2(name="head_norm")(x))
    x = CausalConv3d(2 * self.latent_dim, dtype=self.dtype, name="head_conv")(x)
    return CausalConv3d(2 * self.latent_dim, (1, 1, 1), self.dtype, name="conv1_out")(x)


class Decoder(_Coder):
  """conv2 of WanVAE_ + Decoder3d: latent [B, T, h, w, z] -> patchified [B, T', H/2, W/2, 12]."""

  @nn.compact
  def __call__(self, z, first_chunk: bool = True):
    dims = [self.dim * u for u in (self.dim_mult[-1],) + tuple(self.dim_mult[::-1])]
    x = CausalConv3d(self.latent_dim, (1, 1, 1), self.dtype, name="conv2_in")(z)
    x = CausalConv3d(dims[0], dtype=self.dtype, name="conv1")(x)
    x = self._middle(x, dims[0])
    last = len(self.dim_mult) - 1
    for i, dout in enumerate(dims[1:]):
      t_up = self._resamples_time(i)
      up = i != last
      y = x
      for j in range(self.num_res_blocks + 1):
        y = ResidualBlock(dout, self.dtype, name=f"up_{i}_res_{j}")(y)
      if up:
        if t_up:
          y = TimeConv(2 * dout, "up", self.dtype, name=f"up_{i}_time_conv")(y, first_chunk)
        # nearest(-exact) x2 then a 3x3 conv. (A sub-pixel form with four 2x2 convs does 4/9 of
        # the multiply-adds but ran slower on XLA:CPU.)
        y = jnp.repeat(jnp.repeat(y, 2, axis=2), 2, axis=3)
        y = Conv2d(dout, 3, 1, ((1, 1), (1, 1)), self.dtype, name=f"up_{i}_resample")(y)
        y = y + dup_up(x, dout, 2 if t_up else 1, 2, first_chunk)
      x = y
    x = nn.silu(RMSNormL2(name="head_norm")(x))
    return CausalConv3d(12, dtype=self.dtype, name="head_conv")(x)


def patchify(x):
  """[B, T, H, W, 3] -> [B, T, H/2, W/2, 12], channel c*4 + w_off*2 + h_off (official order)."""
  b, t, h, w, c = x.shape
  x = x.reshape(b, t, h // 2, 2, w // 2, 2, c)  # (h_off at 3, w_off at 5)
  return x.transpose(0, 1, 2, 4, 6, 5, 3).reshape(b, t, h // 2, w // 2, 4 * c)


def unpatchify(x):
  """Inverse of patchify: [B, T, h, w, 12] -> [B, T, 2h, 2w, 3]."""
  b, t, h, w, _ = x.shape
  x = x.reshape(b, t, h, w, 3, 2, 2)  # (c, w_off, h_off)
  return x.transpose(0, 1, 2, 6, 3, 5, 4).reshape(b, t, 2 * h, 2 * w, 3)


def stream_chunks(module: nn.Module, params, x, chunk: int):
  """Runs `module` over x [B, T, ...] as the official chunked execution, exactly.

  The first frame goes alone (first_chunk=True), then chunks of `chunk` frames through a
  `lax.scan` that carries every conv cache (flax collection 'cache'); a shorter tail chunk, if
  any, runs after the scan. Returns the outputs concatenated along time.
  """
  unbound = module.clone(parent=None, name=None)

  def run(cache, piece, first):
    variables = {"params": params} if cache is None else {"params": params, CACHE: cache}
    out, state = unbound.apply(variables, piece, first, mutable=[CACHE])
    return state[CACHE], out

  cache, first_out = run(None, x[:, :1], True)
  outs = [first_out]
  rest = x[:, 1:]
  steps = rest.shape[1] // chunk
  if steps:
    body = rest[:, :steps * chunk]
    body = body.reshape(body.shape[0], steps, chunk, *body.shape[2:]).swapaxes(0, 1)
    cache, scanned = jax.lax.scan(lambda c, p: run(c, p, False), cache, body)
    scanned = scanned.swapaxes(0, 1)  # [B, steps, t_out, ...]
    outs.append(scanned.reshape(scanned.shape[0], -1, *scanned.shape[3:]))
  if rest.shape[1] > steps * chunk:
    outs.append(run(cache, rest[:, steps * chunk:], False)[1])
  return jnp.concatenate(outs, axis=1)


class HBQTokenizer(nn.Module):
  """The official HBQ_Tokenizer (WanVAE_ with encoder_out_type='feature_tanh')."""
  dim: int = 160
  dec_dim: int = 256
  latent_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  dtype: Dtype = jnp.float32
  frame_chunk: int = 0   # >0: stream videos, this many latent frames per step (exact)
  tile_latent: int = 0   # >0: decode in overlapping spatial tiles of this many latent tokens
  tile_overlap: int = 2  # latent tokens shared by neighbouring tiles (linearly blended)

  def setup(self):
    self.encoder = Encoder(self.dim, self.latent_dim, tuple(self.dim_mult), self.num_res_blocks,
                           tuple(self.temporal_downsample), self.dtype)
    self.decoder = Decoder(self.dec_dim, self.latent_dim, tuple(self.dim_mult),
                           self.num_res_blocks, tuple(self.temporal_downsample[::-1]), self.dtype)

  def _params(self, module: nn.Module, example):
    if self.is_initializing():
      module(example)  # creates the parameters
    return module.variables["params"]

  def encode(self, x):
    """[B, H, W, 3] or [B, T, H, W, 3] in [-1, 1] -> tanh latent at 1/16 (and 1/4 in time)."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"tokenizer input must be float in [-1, 1], got {x.dtype} (uint8 pixels: "
                      "grn_jax.tokenizer_io.encode_latents converts them).")
    if x.ndim not in (4, 5):
      raise ValueError(f"tokenizer input must be [B, H, W, 3] or [B, T, H, W, 3], got {x.shape}.")
    image = x.ndim == 4
    if image:
      x = x[:, None]
    _, t, h, w, c = x.shape
    if c != 3 or h % 16 or w % 16 or (t - 1) % 4:
      raise ValueError(f"tokenizer input must be RGB with H, W divisible by 16 and T = 1 + 4k "
                       f"frames, got {x.shape}.")
    x = patchify(x.astype(self.dtype))
    if self.frame_chunk and t > 1:
      params = self._params(self.encoder, x[:, :1])
      out = stream_chunks(self.encoder, params, x, 4 * self.frame_chunk)
    else:
      out = self.encoder(x)
    mu = jnp.tanh(out[..., :self.latent_dim].astype(jnp.float32))
    return mu[:, 0] if image else mu

  def decode(self, z):
    """Latent [B, h, w, d] or [B, T, h, w, d] -> images [B, 16h, 16w, 3] / videos, float32."""
    if z.ndim not in (4, 5) or z.shape[-1] != self.latent_dim:
      raise ValueError(f"latent must be [B, h, w, {self.latent_dim}] or [B, T, h, w, "
                       f"{self.latent_dim}] ({self.latent_dim} channels), got {z.shape}.")
    image = z.ndim == 4
    if image:
      z = z[:, None]
    z = z.astype(self.dtype)
    params = self._params(self.decoder, z[:, :1])
    if self.tile_latent and max(z.shape[2:4]) > self.tile_latent:
      x = self._decode_tiled(params, z)
    else:
      x = self._decode_frames(params, z)
    return x[:, 0] if image else x

  def __call__(self, x):
    return self.decode(self.encode(x))

  def _decode_frames(self, params, z):
    """Whole-sequence or streamed decode of z [B, T, h, w, d] -> float32 pixels."""
    if self.frame_chunk and z.shape[1] > 1:
      out = stream_chunks(self.decoder, params, z, self.frame_chunk)
    else:
      out = self.decoder.clone(parent=None, name=None).apply({"params": params}, z)
    return unpatchify(out).astype(jnp.float32)

  def _decode_tiled(self, params, z):
    """Overlapping spatial tiles (one compiled decoder, scanned), blended with linear ramps."""
    tile, overlap = self.tile_latent, self.tile_overlap
    if not 0 <= overlap < tile:
      raise ValueError(f"tile_overlap={overlap} must be in [0, tile_latent={tile}).")
    b, t, h, w, _ = z.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = _tile_starts(h, tile, overlap), _tile_starts(w, tile, overlap)
    starts = np.array([(y0, x0) for y0 in ys for x0 in xs], np.int32)
    masks = np.stack([np.outer(_ramp(th * 16, overlap * 16 * (y0 > 0),
                                     overlap * 16 * (y0 + th < h)),
                               _ramp(tw * 16, overlap * 16 * (x0 > 0),
                                     overlap * 16 * (x0 + tw < w))) for y0, x0 in starts])
    t_out = 1 + 4 * (t - 1) if any(self.temporal_downsample) else t
    zero = jnp.zeros((), jnp.int32)

    def add_tile(carry, tile_in):
      out, weight = carry
      (y0, x0), mask = tile_in
      piece = self._decode_frames(
          params, jax.lax.dynamic_slice(z, (zero, zero, y0, x0, zero), (b, t, th, tw, z.shape[-1])))
      at = (zero, zero, 16 * y0, 16 * x0, zero)
      size = piece.shape
      region = jax.lax.dynamic_slice(out, at, size) + piece * mask[None, None, :, :, None]
      out = jax.lax.dynamic_update_slice(out, region, at)
      weight = jax.lax.dynamic_update_slice(
          weight, jax.lax.dynamic_slice(weight, at[2:4], size[2:4]) + mask, at[2:4])
      return (out, weight), None

    init = (jnp.zeros((b, t_out, 16 * h, 16 * w, 3), jnp.float32),
            jnp.zeros((16 * h, 16 * w), jnp.float32))
    (out, weight), _ = jax.lax.scan(add_tile, init, (jnp.asarray(starts), jnp.asarray(masks)))
    return out / weight[None, None, :, :, None]


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
  """Tile origins covering [0, size) with tiles of `tile` overlapping by at least `overlap`."""
  if size <= tile:
    return [0]
  return sorted(set(range(0, size - tile, tile - overlap)) | {size - tile})


def _ramp(size: int, left: int, right: int) -> np.ndarray:
  """Blend weights [size]: rising over `left` pixels, falling over `right`, 1 elsewhere."""
  pos = np.arange(size, dtype=np.float32) + 0.5
  w = np.ones((size,), np.float32)
  if left:
    w = np.minimum(w, pos / left)
  if right:
    w = np.minimum(w, (size - pos) / right)
  return w


def validate_tokenizer_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming missing, unknown or inconsistent `config.tokenizer` fields."""
  config_check.check_fields(cfg, "tokenizer", TOKENIZER_FIELDS + IO_FIELDS + EXECUTION_FIELDS)
  if len(cfg.dim_mult) != 4:
    raise ValueError("config.tokenizer.dim_mult must have 4 entries (stride 16 = patchify 2 x "
                     f"2^3), got {cfg.dim_mult}.")
  if len(cfg.temporal_downsample) != len(cfg.dim_mult) - 1:
    raise ValueError("config.tokenizer.temporal_downsample needs len(dim_mult) - 1 entries, got "
                     f"{cfg.temporal_downsample} for dim_mult={cfg.dim_mult}.")
  if sum(bool(v) for v in cfg.temporal_downsample) not in (0, 2):
    raise ValueError("config.tokenizer.temporal_downsample must downsample time twice (x4, the "
                     f"released tokenizers) or never, got {cfg.temporal_downsample}.")
  for name in EXECUTION_FIELDS:
    if int(cfg[name]) < 0:
      raise ValueError(f"config.tokenizer.{name} must be >= 0, got {cfg[name]}.")
  if cfg.tile_latent and not cfg.tile_overlap < cfg.tile_latent:
    raise ValueError(f"config.tokenizer.tile_overlap={cfg.tile_overlap} must be smaller "
                     f"than tile_latent={cfg.tile_latent}.")
  jnp.dtype(cfg.dtype)  # raises TypeError for an unknown dtype name


def build_tokenizer(cfg: ml_collections.ConfigDict) -> HBQTokenizer:
  """The tokenizer module from `config.tokenizer` (weights: grn_jax.tokenizer_io.load_tokenizer)."""
  validate_tokenizer_config(cfg)
  return HBQTokenizer(
      dim=cfg.dim, dec_dim=cfg.dec_dim, latent_dim=cfg.latent_dim,
      dim_mult=tuple(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks,
      temporal_downsample=tuple(bool(v) for v in cfg.temporal_downsample),
      dtype=jnp.dtype(cfg.dtype), frame_chunk=int(cfg.frame_chunk),
      tile_latent=int(cfg.tile_latent), tile_overlap=int(cfg.tile_overlap))
