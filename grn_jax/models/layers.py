"""Layers shared by the GRN transformers (flax.linen, channels-last, logical axis names).

Parameters are float32 and carry logical axis names; computation runs in `dtype`.
Dense layers are `self.param` + einsum (not `nn.DenseGeneral`, see flax#3676), with kernels laid
out so that a PyTorch `Linear` weight [out, in] maps onto them by a transpose and a reshape.
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grn_jax.models import attention

Dtype = Any
Axes = tuple[str | None, ...]

REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def stack_blocks(block_cls, count: int, block_kwargs: dict, x, *args, per_layer=(),
                 scan: bool = False, remat_policy: str = "none", prefix: str = "block"):
  """`count` copies of a block on the carry x, unrolled or scanned, optionally rematerialised.

  Call it inside a compact method: the blocks become children of that module, named
  `{prefix}_{i}` unrolled or stacked along a leading `layers` axis under `layers` when scanned
  (the converters know both layouts). `block_cls(**block_kwargs)(x, *args)` must return
  `(x, out)`; `per_layer[i]` True marks args[i] as stacked over layers (layer i gets
  args[i][i]), the others are broadcast to every layer. Returns (x, the outs stacked over
  layers, or None where the blocks return None).
  """
  if remat_policy != "none":
    block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
  per_layer = tuple(per_layer) + (False,) * (len(args) - len(per_layer))
  if scan:
    scanned = nn.scan(block_cls, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=tuple(0 if p else nn.broadcast for p in per_layer), length=count,
                      metadata_params={nn.PARTITION_NAME: "layers"})
    return scanned(**block_kwargs, name="layers")(x, *args)
  outs = []
  for i in range(count):
    layer_args = [jax.tree.map(lambda a, i=i: a[i], arg) if p else arg
                  for arg, p in zip(args, per_layer)]
    x, out = block_cls(**block_kwargs, name=f"{prefix}_{i}")(x, *layer_args)
    outs.append(out)
  if all(out is None for out in outs):
    return x, None
  return x, jax.tree.map(lambda *a: jnp.stack(a), *outs)


class BlockStack(nn.Module):
  """`stack_blocks` as a module: its blocks live under this module's name (e.g. `blocks`)."""
  block_cls: Any
  count: int
  block: dict
  scan: bool = False
  remat_policy: str = "none"
  per_layer: tuple[bool, ...] = ()

  @nn.compact
  def __call__(self, x, *args):
    return stack_blocks(self.block_cls, self.count, self.block, x, *args,
                        per_layer=self.per_layer, scan=self.scan, remat_policy=self.remat_policy)


def xavier_uniform(in_axes: Sequence[int], out_axes: Sequence[int]):
  """torch.nn.init.xavier_uniform_ on a kernel whose fan axes are split over several dims."""
  return nn.initializers.variance_scaling(
      1.0, "fan_avg", "uniform", in_axis=tuple(in_axes), out_axis=tuple(out_axes))


class Dense(nn.Module):
  """y = x @ W + b with a multi-dimensional kernel [in..., out...] and logical axis names.

  Attributes:
    features: output shape (tuple for multi-dim outputs, e.g. (3, heads, head_dim)).
    axes: logical names of the kernel dims: the input dims then the output dims.
    in_dims: how many trailing input dims of `x` are contracted.
  """
  features: tuple[int, ...]
  axes: Axes
  in_dims: int = 1
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  kernel_init: Any = None
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    in_shape = x.shape[-self.in_dims:]
    kshape = tuple(in_shape) + tuple(self.features)
    n_in, n_out = len(in_shape), len(self.features)
    if len(self.axes) != n_in + n_out:
      raise ValueError(f"{self.name}: {len(self.axes)} axis names for a {len(kshape)}-D kernel.")
    init = self.kernel_init or xavier_uniform(range(n_in), range(n_in, n_in + n_out))
    kernel = self.param("kernel", nn.with_logical_partitioning(init, self.axes), kshape,
                        jnp.float32)
    letters = "abcdefghijklmnop"
    xin = letters[:n_in]
    kout = letters[n_in:n_in + n_out]
    eq = f"...{xin},{xin}{kout}->...{kout}"
    y = jnp.einsum(eq, x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", nn.with_logical_partitioning(self.bias_init, self.axes[n_in:]),
                        tuple(self.features), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class RMSNorm(nn.Module):
  """x * rsqrt(mean(x^2) + eps) * weight, computed in float32, returned in x.dtype."""
  eps: float = 1e-6
  axis_name: str = "norm"

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    weight = self.param("weight", nn.with_logical_partitioning(nn.initializers.ones,
                                                               (self.axis_name,)),
                        (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (weight * x32).astype(x.dtype)


def modulate(x: jnp.ndarray, shift: jnp.ndarray, scale: jnp.ndarray) -> jnp.ndarray:
  """adaLN modulation. x [B, N, C]; shift, scale [B, C]."""
  return x * (1 + scale[:, None, :]) + shift[:, None, :]


def timestep_frequencies(t: jnp.ndarray, dim: int = 256, max_period: float = 10000.0):
  """Sinusoid of the raw keep ratio t (no x1000): [cos(t w_k), sin(t w_k)] (cos first).

  t float [B] -> float32 [B, dim], w_k = exp(-ln(max_period) k / (dim/2)).
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class TimestepEmbedder(nn.Module):
  """Keep ratio t [B] -> [B, hidden]: sinusoid(256) -> Linear -> SiLU -> Linear."""
  hidden_size: int
  frequency_dim: int = 256
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jnp.ndarray) -> jnp.ndarray:
    normal = nn.initializers.normal(0.02)
    x = timestep_frequencies(t, self.frequency_dim)
    x = Dense((self.hidden_size,), ("freq", "embed"), dtype=self.dtype, kernel_init=normal,
              name="mlp_0")(x)
    x = nn.silu(x)
    return Dense((self.hidden_size,), ("embed", "embed_out"), dtype=self.dtype,
                 kernel_init=normal, name="mlp_2")(x)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
  """Fixed 2-D sin-cos embedding, float32 [grid*grid, embed_dim] (MAE convention).

  First half of the channels encodes the column index, second half the row index; each half is
  [sin(pos w), cos(pos w)] with w_k = 10000^(-k / (embed_dim/4)).
  """
  if embed_dim % 4:
    raise ValueError("hidden_size must be divisible by 4 for the 2-D position embedding.")
  rows, cols = np.meshgrid(np.arange(grid_size, dtype=np.float64),
                           np.arange(grid_size, dtype=np.float64), indexing="ij")

  def one_axis(pos):
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4))
    out = pos.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([one_axis(cols), one_axis(rows)], axis=1).astype(np.float32)


def rope_2d_angles(head_dim: int, grid_size: int, theta: float = 10000.0) -> np.ndarray:
  """Axial 2-D RoPE angles, float32 [grid*grid, head_dim] (official VisionRotaryEmbeddingFast).

  The first head_dim/2 angles come from the row index, the last head_dim/2 from the column
  index; within each half, frequency k (theta^(-2k/(head_dim/2))) fills the interleaved pair
  (2k, 2k+1).
  """
  half = head_dim // 2
  if half % 2:
    raise ValueError(f"head_dim must be divisible by 4 for 2-D RoPE, got {head_dim}.")
  freqs = 1.0 / theta ** (np.arange(0, half, 2, dtype=np.float32) / np.float32(half))
  pos = np.arange(grid_size, dtype=np.float32)
  per_axis = np.repeat(pos[:, None] * freqs[None], 2, axis=-1)  # [grid, half]
  rows = np.broadcast_to(per_axis[:, None, :], (grid_size, grid_size, half))
  cols = np.broadcast_to(per_axis[None, :, :], (grid_size, grid_size, half))
  return np.concatenate([rows, cols], axis=-1).reshape(grid_size * grid_size, head_dim)


def rope_tables(head_dim: int, grid_size: int, num_prefix: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(cos, sin) float32 [num_prefix + grid^2, head_dim]; prefix rows are unrotated (cos 1, sin 0)."""
  angles = rope_2d_angles(head_dim, grid_size)
  cos, sin = np.cos(angles), np.sin(angles)
  if num_prefix:
    cos = np.concatenate([np.ones((num_prefix, head_dim), np.float32), cos])
    sin = np.concatenate([np.zeros((num_prefix, head_dim), np.float32), sin])
  return cos.astype(np.float32), sin.astype(np.float32)


def rope_3d_frequencies(head_dim: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
  """Frequencies of the 3-D RoPE (official `precompute_rope3d_freqs_grid`), float32.

  The head_dim/2 rotary pairs split into n (frame) + n (height) + the rest (width), n =
  head_dim/2 // 3: 21 + 21 + 22 for head_dim 128. Frame and height use theta^(-k/n), width
  theta^(-k/(head_dim/2 - 2n)), k = 0, 1, ... (exponent k/n, not 2k/n). Returns (frame/height
  frequencies [n], width frequencies [head_dim/2 - 2n]).
  """
  pairs = head_dim // 2
  n = pairs // 3
  if head_dim % 2 or n < 1:
    raise ValueError(f"3-D RoPE needs an even head_dim of at least 6, got {head_dim}.")

  def freqs(count):
    return (1.0 / np.float32(theta) ** (np.arange(count, dtype=np.float32) / np.float32(count))
            ).astype(np.float32)
  return freqs(n), freqs(pairs - 2 * n)


def rope_3d_tables(frame, height, width, head_dim: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(cos, sin) float32 [..., head_dim] of positions (frame, height, width) [...] (integers).

  Pair i of the interleaved layout turns by frame * f_i (i < n), height * f_(i-n) (n <= i < 2n)
  or width * w_(i-2n); both members of a pair share the angle.
  """
  former, last = (jnp.asarray(f) for f in rope_3d_frequencies(head_dim))
  frame, height, width = jnp.broadcast_arrays(frame, height, width)

  def turn(pos, freqs):
    return jnp.asarray(pos, jnp.float32)[..., None] * freqs
  angles = jnp.concatenate([turn(frame, former), turn(height, former), turn(width, last)], -1)
  angles = jnp.repeat(angles, 2, axis=-1)
  return jnp.cos(angles), jnp.sin(angles)


def rotate_interleaved(x: jnp.ndarray) -> jnp.ndarray:
  """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
  pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
  rotated = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1)
  return rotated.reshape(x.shape)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
  """x [..., head_dim] rotated by angles whose cos, sin [..., head_dim] broadcast against x."""
  return x * cos.astype(x.dtype) + rotate_interleaved(x) * sin.astype(x.dtype)


class Attention(nn.Module):
  """Multi-head self-attention with qk RMSNorm and 2-D RoPE (no mask: fully bidirectional).

  Heads-major [B, heads, N, head_dim] from one transpose of the fused qkv projection to the
  output projection (the layout of `attention.attention(..., heads_major=True)`'s fast XLA:CPU
  path); logits and softmax in float32, as the official code upcasts q and k. `impl` comes from
  `config.model.attention_impl`.
  """
  num_heads: int
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    hidden = x.shape[-1]
    head_dim = hidden // self.num_heads
    qkv = Dense((3, self.num_heads, head_dim), ("embed", "qkv", "heads", "kv"),
                dtype=self.dtype, name="qkv")(x)  # [B, N, 3, heads, hd]
    qkv = qkv.transpose(2, 0, 3, 1, 4)  # [3, B, heads, N, hd]
    q = apply_rope(RMSNorm(name="q_norm")(qkv[0]), cos, sin)
    k = apply_rope(RMSNorm(name="k_norm")(qkv[1]), cos, sin)
    v = qkv[2]
    q = nn.with_logical_constraint(q, ("batch", "act_heads", "length", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "act_heads", "length", "kv"))
    out = attention.attention(q, k, v, scale=head_dim**-0.5, impl=self.impl, heads_major=True)
    out = out.astype(self.dtype).transpose(0, 2, 1, 3)  # [B, N, heads, hd]
    return Dense((hidden,), ("heads", "kv", "embed"), in_dims=2, dtype=self.dtype,
                 kernel_init=xavier_uniform((0, 1), (2,)), name="proj")(out)


def swiglu_hidden(hidden_size: int, mlp_ratio: float) -> int:
  """Official SwiGLU width: int(int(hidden * mlp_ratio) * 2 / 3)."""
  return int(int(hidden_size * mlp_ratio) * 2 / 3)


class SwiGLU(nn.Module):
  """w3(silu(x1) * x2) with [x1 | x2] = w12(x)."""
  hidden_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    h = Dense((2, self.hidden_dim), ("embed", "gate", "mlp"), dtype=self.dtype,
              kernel_init=xavier_uniform((0,), (1, 2)), name="w12")(x)
    h = nn.silu(h[..., 0, :]) * h[..., 1, :]
    h = nn.with_logical_constraint(h, ("batch", "length", "act_mlp"))
    return Dense((x.shape[-1],), ("mlp", "embed"), dtype=self.dtype, name="w3")(h)
