"""The HBQ tokenizer: a Wan-2.2-style causal 3-D conv autoencoder with a tanh latent (§C).

  encode: images [B, H, W, 3] or videos [B, T, H, W, 3] (T = 1 + 4k) in [-1, 1]
          -> latents [B, H/16, W/16, d] or [B, 1 + k, H/16, W/16, d] in (-1, 1)
  decode: the inverse map (no clamp inside; callers clamp).

Channels-last throughout. The official code runs videos chunk by chunk (the first frame alone,
then 4 frames at a time with cached context; the decoder one latent frame at a time). Every
piece of that execution has an exact whole-sequence form, which is what we run (one program per
shape, no Python loop over chunks):
  * causal 3x3x3 convs: the cache of the last two input frames equals zero front padding of the
    whole sequence;
  * downsample3d: the first chunk skips the temporal conv, later chunks prepend the previous
    chunk's last frame: out = [x_0, conv_t(stride 2, no padding)(x)];
  * upsample3d ("Rep" protocol): frame 0 skips the temporal conv, the rest see a causal conv
    whose history starts after frame 0: out = [x_0, interleave(conv_t(causal)(x_1:))];
  * AvgDown3D pads one zero frame in front of the odd first chunk (= of the whole sequence);
    DupUp3D drops the first repeated frame of the first chunk (= of the whole sequence).
tests/test_tokenizer.py checks the resulting causality (prefixes of a video encode and decode to
prefixes), and the parity with the official chunked code was checked outside the project.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Dtype = Any
TOKENIZER_FIELDS = ("dim", "dec_dim", "latent_dim", "dim_mult", "num_res_blocks",
                    "temporal_downsample", "dtype")
OPTIONAL_FIELDS = ("checkpoint", "tile_latent", "tile_overlap", "frame_chunk",
                   "frame_context")


def _torch_conv_init(fan_in: int):
  """PyTorch's default Conv init (kaiming uniform, a=sqrt(5)) for kernels and biases."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                  bound)


def conv2d(x, kernel, stride: int = 1, padding=((1, 1), (1, 1))):
  """x [N, H, W, Cin], kernel [kh, kw, Cin, Cout]."""
  return jax.lax.conv_general_dilated(
      x, kernel.astype(x.dtype), (stride, stride), padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def fold_frames(fn, x):
  """Applies a per-image fn to every frame of x [B, T, H, W, C]."""
  b, t = x.shape[:2]
  y = fn(x.reshape(b * t, *x.shape[2:]))
  return y.reshape(b, t, *y.shape[1:])


class CausalConv3d(nn.Module):
  """Conv3d with 2 past frames and no future frame; spatial padding k//2. Kernel [kt,kh,kw,i,o]."""
  features: int
  kernel: tuple[int, int, int] = (3, 3, 3)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kt, kh, kw = self.kernel
    cin = x.shape[-1]
    fan_in = cin * kt * kh * kw
    w = self.param("kernel", _torch_conv_init(fan_in), (kt, kh, kw, cin, self.features))
    b = self.param("bias", _torch_conv_init(fan_in), (self.features,))
    t = x.shape[1]
    pad = ((kh // 2, kh // 2), (kw // 2, kw // 2))
    xp = jnp.pad(x, ((0, 0), (kt - 1, 0), (0, 0), (0, 0), (0, 0)))
    out = 0.0
    for tap in range(kt):
      if t == 1 and tap < kt - 1:
        continue  # a single frame only meets zeros in the earlier taps
      frames = xp[:, tap:tap + t]
      out = out + fold_frames(lambda f, tap=tap: conv2d(f, w[tap].astype(self.dtype), 1, pad),
                              frames)
    return out + b.astype(self.dtype)


class Conv2d(nn.Module):
  """Per-frame 2-D conv (resample convs). Kernel [kh, kw, in, out]."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: Any = ((1, 1), (1, 1))
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, cin = self.kernel_size, x.shape[-1]
    w = self.param("kernel", _torch_conv_init(cin * k * k), (k, k, cin, self.features))
    b = self.param("bias", _torch_conv_init(cin * k * k), (self.features,))
    return fold_frames(lambda f: conv2d(f, w.astype(self.dtype), self.stride, self.padding),
                       x) + b.astype(self.dtype)


class RMSNormL2(nn.Module):
  """Official RMS_norm: L2-normalise over channels (eps 1e-12 on the norm) * sqrt(C) * gamma."""

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", nn.initializers.ones, (x.shape[-1],))
    x32 = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
    y = x32 / jnp.maximum(norm, 1e-12) * math.sqrt(x.shape[-1]) * gamma
    return y.astype(x.dtype)


class ResidualBlock(nn.Module):
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = x
    if x.shape[-1] != self.features:
      h = CausalConv3d(self.features, (1, 1, 1), self.dtype, name="shortcut")(x)
    y = nn.silu(RMSNormL2(name="norm1")(x))
    y = CausalConv3d(self.features, dtype=self.dtype, name="conv1")(y)
    y = nn.silu(RMSNormL2(name="norm2")(y))
    y = CausalConv3d(self.features, dtype=self.dtype, name="conv2")(y)
    return y + h


class AttentionBlock(nn.Module):
  """Single-head self-attention over the H*W positions of every frame."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    b, t, hh, ww = x.shape[:4]
    y = RMSNormL2(name="norm")(x)
    qkv = Conv2d(3 * c, 1, padding="VALID", dtype=self.dtype, name="to_qkv")(y)
    qkv = qkv.reshape(b * t, hh * ww, 3, 1, c)
    out = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    out = out.reshape(b, t, hh, ww, c)
    return x + Conv2d(c, 1, padding="VALID", dtype=self.dtype, name="proj")(out)


def avg_down(x, out_channels: int, factor_t: int, factor_s: int):
  """Official AvgDown3D on [B, T, H, W, C] (zero front padding of T to a multiple of factor_t)."""
  b, t, h, w, c = x.shape
  pad_t = (factor_t - t % factor_t) % factor_t
  x = jnp.pad(x, ((0, 0), (pad_t, 0), (0, 0), (0, 0), (0, 0)))
  t = (t + pad_t) // factor_t
  x = x.reshape(b, t, factor_t, h // factor_s, factor_s, w // factor_s, factor_s, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)  # [B, T', H', W', C, ft, fs, fs]
  x = x.reshape(b, t, h // factor_s, w // factor_s, out_channels, -1)
  return x.mean(axis=-1)


def dup_up(x, out_channels: int, factor_t: int, factor_s: int):
  """Official DupUp3D on [B, T, H, W, C]; drops the first factor_t - 1 frames (first chunk)."""
  b, t, h, w, c = x.shape
  repeats = out_channels * factor_t * factor_s * factor_s // c
  x = jnp.repeat(x, repeats, axis=-1)
  x = x.reshape(b, t, h, w, out_channels, factor_t, factor_s, factor_s)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)  # [B, T, ft, H, fs, W, fs, C]
  x = x.reshape(b, t * factor_t, h * factor_s, w * factor_s, out_channels)
  return x[:, factor_t - 1:]


class Encoder(nn.Module):
  """Encoder3d + conv1 of WanVAE_: patchified video [B, T, H/2, W/2, 12] -> 2z channels."""
  dim: int
  latent_dim: int
  dim_mult: tuple[int, ...]
  num_res_blocks: int
  temporal_downsample: tuple[bool, ...]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dims = [self.dim * u for u in (1,) + tuple(self.dim_mult)]
    x = CausalConv3d(dims[0], dtype=self.dtype, name="conv1")(x)
    last = len(self.dim_mult) - 1
    for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
      t_down = bool(self.temporal_downsample[i]) if i < len(self.temporal_downsample) else False
      down = i != last
      shortcut = avg_down(x, dout, 2 if t_down else 1, 2 if down else 1)
      y = x
      for j in range(self.num_res_blocks):
        y = ResidualBlock(dout, self.dtype, name=f"down_{i}_res_{j}")(y)
      if down:
        y = Conv2d(dout, 3, 2, ((0, 1), (0, 1)), self.dtype, name=f"down_{i}_resample")(y)
        if t_down:
          # First chunk: frame 0 passes; later frames: stride-2 valid conv over the sequence.
          time_conv = TimeConv(dout, self.dtype, name=f"down_{i}_time_conv")
          if y.shape[1] == 1:
            y = time_conv(y, skip=True)
          else:
            y = jnp.concatenate([y[:, :1], time_conv(y, stride=2, causal=False)], axis=1)
      x = y + shortcut
    x = ResidualBlock(dims[-1], self.dtype, name="middle_0")(x)
    x = AttentionBlock(self.dtype, name="middle_attn")(x)
    x = ResidualBlock(dims[-1], self.dtype, name="middle_2")(x)
    x = nn.silu(RMSNormL2(name="head_norm")(x))
    x = CausalConv3d(2 * self.latent_dim, dtype=self.dtype, name="head_conv")(x)
    return CausalConv3d(2 * self.latent_dim, (1, 1, 1), self.dtype, name="conv1_out")(x)


class TimeConv(nn.Module):
  """Temporal (kt=3, 1x1) conv of the resamplers, kernel [3, 1, 1, in, out].

  causal=True: two zero frames in front, stride 1; causal=False: no padding. skip=True only
  creates the parameters (a single frame never uses them) and returns x.
  """
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, stride: int = 1, causal: bool = True, skip: bool = False):
    cin = x.shape[-1]
    w = self.param("kernel", _torch_conv_init(cin * 3), (3, 1, 1, cin, self.features))
    b = self.param("bias", _torch_conv_init(cin * 3), (self.features,))
    if skip:
      return x
    if causal:
      x = jnp.pad(x, ((0, 0), (2, 0), (0, 0), (0, 0), (0, 0)))
    t_out = (x.shape[1] - 3) // stride + 1
    out = b.astype(self.dtype)
    for tap in range(3):
      frames = x[:, tap:tap + stride * (t_out - 1) + 1:stride]
      out = out + jnp.einsum("bthwc,co->bthwo", frames, w[tap, 0, 0].astype(self.dtype))
    return out


class Decoder(nn.Module):
  """conv2 of WanVAE_ + Decoder3d: latent [B, T, h, w, z] -> patchified [B, T', H/2, W/2, 12]."""
  dim: int
  latent_dim: int
  dim_mult: tuple[int, ...]
  num_res_blocks: int
  temporal_upsample: tuple[bool, ...]
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z):
    dims = [self.dim * u for u in (self.dim_mult[-1],) + tuple(self.dim_mult[::-1])]
    x = CausalConv3d(self.latent_dim, (1, 1, 1), self.dtype, name="conv2_in")(z)
    x = CausalConv3d(dims[0], dtype=self.dtype, name="conv1")(x)
    x = ResidualBlock(dims[0], self.dtype, name="middle_0")(x)
    x = AttentionBlock(self.dtype, name="middle_attn")(x)
    x = ResidualBlock(dims[0], self.dtype, name="middle_2")(x)
    last = len(self.dim_mult) - 1
    for i, (din, dout) in enumerate(zip(dims[:-1], dims[1:])):
      t_up = bool(self.temporal_upsample[i]) if i < len(self.temporal_upsample) else False
      up = i != last
      y = x
      for j in range(self.num_res_blocks + 1):
        y = ResidualBlock(dout, self.dtype, name=f"up_{i}_res_{j}")(y)
      if up:
        if t_up:
          # "Rep" protocol: frame 0 skips the temporal conv; later frames see a causal conv
          # whose history starts after frame 0; each output frame becomes two (interleaved).
          time_conv = TimeConv(2 * dout, self.dtype, name=f"up_{i}_time_conv")
          if y.shape[1] == 1:
            y = time_conv(y, skip=True)
          else:
            rest = time_conv(y[:, 1:], causal=True)  # [B, T-1, H, W, 2C]
            b, t, hh, ww, _ = rest.shape
            rest = rest.reshape(b, t, hh, ww, 2, dout).transpose(0, 1, 4, 2, 3, 5)
            y = jnp.concatenate([y[:, :1], rest.reshape(b, 2 * t, hh, ww, dout)], axis=1)
        y = jnp.repeat(jnp.repeat(y, 2, axis=2), 2, axis=3)  # nearest x2
        y = Conv2d(dout, 3, 1, ((1, 1), (1, 1)), self.dtype, name=f"up_{i}_resample")(y)
        y = y + dup_up(x, dout, 2 if t_up else 1, 2)
      x = y
    x = nn.silu(RMSNormL2(name="head_norm")(x))
    return CausalConv3d(12, dtype=self.dtype, name="head_conv")(x)


def patchify(x):
  """[B, T, H, W, 3] -> [B, T, H/2, W/2, 12], channel c*4 + w_off*2 + h_off (official order)."""
  b, t, h, w, c = x.shape
  x = x.reshape(b, t, h // 2, 2, w // 2, 2, c)  # (h_off at 3, w_off at 5)
  return x.transpose(0, 1, 2, 4, 6, 5, 3).reshape(b, t, h // 2, w // 2, 4 * c)


def unpatchify(x):
  b, t, h, w, _ = x.shape
  x = x.reshape(b, t, h, w, 3, 2, 2)  # (c, w_off, h_off)
  return x.transpose(0, 1, 2, 6, 3, 5, 4).reshape(b, t, 2 * h, 2 * w, 3)


class HBQTokenizer(nn.Module):
  """The official HBQ_Tokenizer (WanVAE_ with encoder_out_type='feature_tanh')."""
  dim: int = 160
  dec_dim: int = 256
  latent_dim: int = 16
  dim_mult: tuple[int, ...] = (1, 2, 4, 4)
  num_res_blocks: int = 2
  temporal_downsample: tuple[bool, ...] = (False, True, True)
  dtype: Dtype = jnp.float32
  tile_latent: int = 0       # decode in overlapping spatial tiles of this many latent tokens
  tile_overlap: int = 2      # latent tokens shared by neighbouring tiles (linearly blended)
  frame_chunk: int = 0       # decode this many latent frames at a time (videos)
  frame_context: int = 2     # preceding latent frames re-decoded as context for a chunk

  def setup(self):
    self.encoder = Encoder(self.dim, self.latent_dim, tuple(self.dim_mult), self.num_res_blocks,
                           tuple(self.temporal_downsample), self.dtype)
    self.decoder = Decoder(self.dec_dim, self.latent_dim, tuple(self.dim_mult),
                           self.num_res_blocks, tuple(self.temporal_downsample[::-1]), self.dtype)

  def _check(self, x, what):
    if x.ndim not in (4, 5):
      raise ValueError(f"{what} must be [B, H, W, C] or [B, T, H, W, C], got {x.shape}.")

  def encode(self, x):
    """[B, H, W, 3] or [B, T, H, W, 3] in [-1, 1] -> tanh latent at 1/16 (and 1/4 in time)."""
    self._check(x, "tokenizer input")
    image = x.ndim == 4
    if image:
      x = x[:, None]
    b, t, h, w, c = x.shape
    if c != 3 or h % 16 or w % 16 or (t - 1) % 4:
      raise ValueError(f"tokenizer input must be RGB with H, W divisible by 16 and T = 1 + 4k "
                       f"frames, got {x.shape}.")
    out = self.encoder(patchify(x.astype(self.dtype)))
    mu = jnp.tanh(out[..., :self.latent_dim].astype(jnp.float32))
    return mu[:, 0] if image else mu

  def decode(self, z):
    """Latent [B, h, w, d] or [B, T, h, w, d] -> images [B, 16h, 16w, 3] / videos."""
    self._check(z, "latent")
    if z.shape[-1] != self.latent_dim:
      raise ValueError(f"latent must have {self.latent_dim} channels, got {z.shape}.")
    image = z.ndim == 4
    if image:
      z = z[:, None]
    z = z.astype(self.dtype)
    if self.tile_latent and max(z.shape[2:4]) > self.tile_latent:
      x = self._decode_tiled(z)
    elif self.frame_chunk and z.shape[1] > self.frame_chunk:
      x = self._decode_frame_chunks(z)
    else:
      x = unpatchify(self.decoder(z)).astype(jnp.float32)
    return x[:, 0] if image else x

  def __call__(self, x):
    return self.decode(self.encode(x))

  def _decode_frame_chunks(self, z):
    """Decodes latent frames in chunks, each after `frame_context` re-decoded context frames."""
    t = z.shape[1]
    if self.frame_context < 1:
      raise ValueError("frame_context must be >= 1: a chunk's first latent frame needs history.")
    outs = [unpatchify(self.decoder(z[:, :self.frame_chunk]))]
    for start in range(self.frame_chunk, t, self.frame_chunk):
      ctx = max(0, start - self.frame_context)
      piece = unpatchify(self.decoder(z[:, ctx:start + self.frame_chunk]))
      # Latents ctx .. start-1 decode to 1 + 4 (start - 1 - ctx) context frames: drop them.
      outs.append(piece[:, 1 + 4 * (start - 1 - ctx):])
    return jnp.concatenate(outs, axis=1).astype(jnp.float32)

  def _decode_tiled(self, z):
    """Overlapping spatial tiles, blended with linear ramps over the overlap."""
    tile, overlap = self.tile_latent, self.tile_overlap
    if not 0 <= overlap < tile:
      raise ValueError(f"tile_overlap={overlap} must be in [0, tile_latent={tile}).")
    b, t, h, w, _ = z.shape
    stride = tile - overlap

    def starts(size):
      if size <= tile:
        return [0]
      s = list(range(0, size - tile, stride)) + [size - tile]
      return sorted(set(s))

    out = None
    weight = None
    for y0 in starts(h):
      for x0 in starts(w):
        piece = unpatchify(self.decoder(z[:, :, y0:y0 + tile, x0:x0 + tile])).astype(
            jnp.float32)
        th, tw = min(tile, h), min(tile, w)
        wy = _ramp(th * 16, overlap * 16 if y0 > 0 else 0,
                   overlap * 16 if y0 + th < h else 0)
        wx = _ramp(tw * 16, overlap * 16 if x0 > 0 else 0,
                   overlap * 16 if x0 + tw < w else 0)
        mask = wy[:, None] * wx[None, :]
        if out is None:
          out = jnp.zeros((b, piece.shape[1], h * 16, w * 16, 3), jnp.float32)
          weight = jnp.zeros((h * 16, w * 16), jnp.float32)
        sl = (slice(y0 * 16, (y0 + th) * 16), slice(x0 * 16, (x0 + tw) * 16))
        out = out.at[:, :, sl[0], sl[1]].add(piece * mask[None, None, :, :, None])
        weight = weight.at[sl].add(mask)
    return out / weight[None, None, :, :, None]


def _ramp(size: int, left: int, right: int):
  """Blend weights [size]: rising over `left` pixels, falling over `right`, 1 elsewhere."""
  pos = jnp.arange(size, dtype=jnp.float32) + 0.5
  w = jnp.ones((size,), jnp.float32)
  if left:
    w = jnp.minimum(w, pos / left)
  if right:
    w = jnp.minimum(w, (size - pos) / right)
  return w


def validate_tokenizer_config(cfg: ml_collections.ConfigDict) -> None:
  keys = set(cfg.keys())
  missing = [f for f in TOKENIZER_FIELDS if f not in keys]
  unknown = sorted(keys - set(TOKENIZER_FIELDS) - set(OPTIONAL_FIELDS))
  if missing or unknown:
    raise ValueError(f"config.tokenizer: missing fields {missing}, unknown fields {unknown}.")
  if len(cfg.temporal_downsample) != len(cfg.dim_mult) - 1:
    raise ValueError("config.tokenizer.temporal_downsample needs len(dim_mult) - 1 entries, got "
                     f"{cfg.temporal_downsample} for dim_mult={cfg.dim_mult}.")
  if len(cfg.dim_mult) != 4:
    raise ValueError("config.tokenizer.dim_mult must have 4 entries (stride 16 = patchify 2 x "
                     f"2^3), got {cfg.dim_mult}.")


def build_tokenizer(cfg: ml_collections.ConfigDict) -> HBQTokenizer:
  """The tokenizer module from `config.tokenizer`."""
  validate_tokenizer_config(cfg)
  return HBQTokenizer(
      dim=cfg.dim, dec_dim=cfg.dec_dim, latent_dim=cfg.latent_dim,
      dim_mult=tuple(cfg.dim_mult), num_res_blocks=cfg.num_res_blocks,
      temporal_downsample=tuple(bool(v) for v in cfg.temporal_downsample),
      dtype=jnp.dtype(cfg.dtype), tile_latent=int(cfg.get("tile_latent", 0)),
      tile_overlap=int(cfg.get("tile_overlap", 2)), frame_chunk=int(cfg.get("frame_chunk", 0)),
      frame_context=int(cfg.get("frame_context", 2)))
