"""The umT5-XXL text encoder of the T2I/T2V pipeline (GRN-SPEC §G.5, §L.9), flax.linen.

The encoder half of umT5 as the official code builds it (the Wan 2.1 T5 implementation):

  x = token_embedding(ids)                                       [B, L, dim]
  per layer (no shared position bias: every layer has its own 32-bucket table):
    x += o(attention(q(n1), k(n1), v(n1), bias=rel_bias(L), mask))   n1 = t5_norm1(x)
    x += fc2(fc1(n2) * gelu_tanh(gate(n2)))                          n2 = t5_norm2(x)
  out = t5_norm(x)                                                float32 [B, L, dim]

  * T5 RMS norm: x * rsqrt(mean(x^2) + 1e-6) in float32, cast to the weight's dtype, then
    times the weight (no mean subtraction, no bias).
  * Attention logits are q . k with NO 1/sqrt(head_dim) scaling, plus the layer's relative
    position bias; padded keys (mask 0) get zero weight, so the outputs of valid rows do not
    depend on how much padding follows them.
  * Relative positions are bucketed bidirectionally (`relative_position_buckets`): half the
    buckets for keys at or before the query, half (offset num_buckets / 2) for keys after it;
    exact buckets up to a quarter of num_buckets, log-spaced up to `max_distance`.
  * The feed-forward is gated GELU with the tanh approximation on the GATE branch (§L.9).

Weights and compute run in `dtype` (the released pipeline runs the encoder in bfloat16 with
bfloat16 weights; float32 for tests); the norms and the softmax run in float32, the output is
float32. Parameters carry logical axis names (rules in the config); `scan_layers` stacks the
layers on a leading `layers` axis, `remat_policy` rematerialises each layer.
"""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grn_jax.models import layers

Dtype = Any

# The encoder config contract: every field is required.
ENCODER_FIELDS = ("vocab_size", "dim", "dim_attn", "dim_ffn", "num_heads", "num_layers",
                  "num_buckets", "max_distance", "dtype")
# Execution switches a config may add; without them the layers are unrolled, no remat.
EXECUTION_FIELDS = ("scan_layers", "remat_policy")
# Fields of the config's `text_encoder` section that grn_jax.text and the loaders read (the
# converted params directory or random weights for tests, the tokenizer file or folder,
# truncation and length buckets).
PROMPT_FIELDS = ("checkpoint", "random_init", "tokenizer_path", "max_length", "length_buckets")
DTYPES = ("float32", "bfloat16")
NORM_EPS = 1e-6


def relative_position_buckets(query_len: int, key_len: int, num_buckets: int,
                              max_distance: int) -> np.ndarray:
  """Bidirectional T5 bucket of every (query, key) pair: int32 [query_len, key_len].

  With d = key - query, n = num_buckets // 2 and e = n // 2 (exact buckets):
    bucket = (d > 0) * n + (|d|                                        if |d| < e
                            min(n - 1, e + floor(ln(|d| / e) / ln(max_distance / e) * (n - e))))
  The logarithm is taken in float32, as the official code does, so that the bucket edges
  round the same way. For 32 buckets and max distance 128: |d| = 0..7 -> 0..7, 8 -> 8,
  16 -> 10, 32 -> 12, 64 -> 14, >= 91 -> 15; keys after the query add 16.
  """
  rel = (np.arange(key_len, dtype=np.int64)[None, :]
         - np.arange(query_len, dtype=np.int64)[:, None])
  half = num_buckets // 2
  exact = half // 2
  offset = (rel > 0).astype(np.int64) * half
  distance = np.abs(rel)
  ratio = np.maximum(distance, 1).astype(np.float32) / np.float32(exact)
  log_part = (np.log(ratio) / np.float32(np.log(max_distance / exact))
              * np.float32(half - exact))
  large = np.minimum(exact + log_part.astype(np.int64), half - 1)
  return (offset + np.where(distance < exact, distance, large)).astype(np.int32)


def attention_core(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, bias: jnp.ndarray,
                   mask: jnp.ndarray) -> jnp.ndarray:
  """softmax(q . k + bias, over valid keys) . v, with no 1/sqrt(d) scaling (T5).

  Args:
    q, k, v: [B, L, heads, head_dim] in the compute dtype.
    bias: [1, heads, L, L] additive logits (the relative position bias).
    mask: bool [B, L], True for valid keys. Masked keys get exactly zero weight (the official
      code fills them with the dtype's minimum; any value that far below underflows exp alike).

  Returns:
    [B, L, heads, head_dim] in the dtype of v. Logits and softmax are float32.
  """
  return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask[:, None, None, :],
                                      scale=1.0)


def _param(module: nn.Module, name: str, axes: tuple[str, ...], shape: tuple[int, ...],
           std: float, dtype: Dtype) -> jnp.ndarray:
  init = nn.initializers.normal(std) if std else nn.initializers.ones
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


class T5Norm(nn.Module):
  """T5 RMS norm: (x * rsqrt(mean(x^2) + eps)) in float32, cast to dtype, times `scale`."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    scale = _param(self, "scale", ("norm",), (x.shape[-1],), 0.0, self.dtype)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + NORM_EPS)
    return scale * x32.astype(self.dtype)


class EncoderLayer(nn.Module):
  """One umT5 encoder layer (official `T5SelfAttention` with its own position embedding).

  Initialisation follows the official init (normal, std as in the docstring of each weight).
  """
  dim_attn: int
  dim_ffn: int
  num_heads: int
  num_buckets: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, buckets: jnp.ndarray) -> jnp.ndarray:
    """x [B, L, dim] (dtype), mask bool [B, L], buckets int32 [L, L] -> [B, L, dim]."""
    dim, heads = x.shape[-1], self.num_heads
    head_dim = self.dim_attn // heads
    dt = self.dtype
    # Official init stds: q (dim * dim_attn)^-1/2, k and v dim^-1/2, o (heads * dim_attn)^-1/2.
    wq = _param(self, "q", ("embed", "heads", "kv"), (dim, heads, head_dim),
                (dim * self.dim_attn) ** -0.5, dt)
    wk = _param(self, "k", ("embed", "heads", "kv"), (dim, heads, head_dim), dim ** -0.5, dt)
    wv = _param(self, "v", ("embed", "heads", "kv"), (dim, heads, head_dim), dim ** -0.5, dt)
    wo = _param(self, "o", ("heads", "kv", "embed"), (heads, head_dim, dim),
                (heads * self.dim_attn) ** -0.5, dt)
    table = _param(self, "pos_embedding", ("relpos_buckets", "heads"),
                   (self.num_buckets, heads), (2 * self.num_buckets * heads) ** -0.5, dt)
    h = T5Norm(dt, name="norm1")(x)
    q = jnp.einsum("bld,dnh->blnh", h, wq)
    k = jnp.einsum("bld,dnh->blnh", h, wk)
    v = jnp.einsum("bld,dnh->blnh", h, wv)
    q = nn.with_logical_constraint(q, ("batch", "length", "act_heads", "kv"))
    k = nn.with_logical_constraint(k, ("batch", "length", "act_heads", "kv"))
    bias = jnp.transpose(table[buckets], (2, 0, 1))[None]               # [1, heads, L, L]
    attn = attention_core(q, k, v, bias, mask)
    x = x + jnp.einsum("blnh,nhd->bld", attn, wo)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))

    # Official init stds: gate and fc1 dim^-1/2, fc2 dim_ffn^-1/2.
    w_gate = _param(self, "gate", ("embed", "mlp"), (dim, self.dim_ffn), dim ** -0.5, dt)
    w_fc1 = _param(self, "fc1", ("embed", "mlp"), (dim, self.dim_ffn), dim ** -0.5, dt)
    w_fc2 = _param(self, "fc2", ("mlp", "embed"), (self.dim_ffn, dim), self.dim_ffn ** -0.5, dt)
    h = T5Norm(dt, name="norm2")(x)
    gated = jnp.einsum("bld,df->blf", h, w_fc1) * jax.nn.gelu(
        jnp.einsum("bld,df->blf", h, w_gate), approximate=True)
    gated = nn.with_logical_constraint(gated, ("batch", "length", "act_mlp"))
    x = x + jnp.einsum("blf,fd->bld", gated, w_fc2)
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class _ScanLayer(EncoderLayer):
  """EncoderLayer with the (carry, broadcast args) -> (carry, None) signature of nn.scan."""

  def __call__(self, x, mask, buckets):  # pytype: disable=signature-mismatch
    return super().__call__(x, mask, buckets), None


class UMT5Encoder(nn.Module):
  """umT5 encoder; fields mirror the encoder config (see configs/umt5.py).

  Params: `token_embedding` [vocab, dim], layers `layer_{i}` (or one `layers` with
  a leading [num_layers] axis when `scan_layers`), each with `norm1/scale`, `q`, `k`, `v`
  [dim, heads, head_dim], `o` [heads, head_dim, dim], `pos_embedding` [num_buckets, heads],
  `norm2/scale`, `gate`, `fc1` [dim, dim_ffn], `fc2` [dim_ffn, dim]; then `norm/scale`.
  """
  vocab_size: int
  dim: int
  dim_attn: int
  dim_ffn: int
  num_heads: int
  num_layers: int
  num_buckets: int
  max_distance: int
  dtype: Dtype = jnp.float32
  scan_layers: bool = False
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, ids: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Encodes token ids.

    Args:
      ids: int32 [B, L] token ids (pad id 0 past the prompt); an id outside
        [0, vocab_size) makes its row, and every row attending to it, NaN.
      mask: [B, L], 1 (or True) for valid tokens, 0 for padding.

    Returns:
      float32 [B, L, dim]; rows of valid tokens do not depend on the padding after them.
    """
    if ids.ndim != 2 or tuple(mask.shape) != tuple(ids.shape):
      raise ValueError(f"UMT5Encoder expects ids [B, L] and a mask of the same shape; got ids "
                       f"{tuple(ids.shape)} and mask {tuple(mask.shape)}.")
    length = ids.shape[1]
    mask = mask.astype(bool)
    buckets = jnp.asarray(relative_position_buckets(length, length, self.num_buckets,
                                                    self.max_distance))
    embedding = _param(self, "token_embedding", ("vocab", "embed"), (self.vocab_size, self.dim),
                       1.0, self.dtype)
    ids = ids.astype(jnp.int32)
    # Ids outside [0, vocab_size) cannot raise inside jit: they give NaN rows, not wrapped ones.
    x = jnp.where((ids >= 0)[..., None], jnp.take(embedding, ids, axis=0, mode="fill",
                                                   fill_value=jnp.nan), jnp.nan)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    layer = dict(dim_attn=self.dim_attn, dim_ffn=self.dim_ffn, num_heads=self.num_heads,
                 num_buckets=self.num_buckets, dtype=self.dtype)
    x, _ = layers.stack_blocks(_ScanLayer, self.num_layers, layer, x, mask, buckets,
                               scan=self.scan_layers, remat_policy=self.remat_policy,
                               prefix="layer")
    return T5Norm(self.dtype, name="norm")(x).astype(jnp.float32)


def config_fields(cfg) -> dict[str, Any]:
  """The fields of a ConfigDict, a mapping or an attribute object, as a dict."""
  if isinstance(cfg, Mapping) or hasattr(cfg, "keys"):
    return {k: cfg[k] for k in cfg.keys()}
  return dict(vars(cfg))


def validate_encoder_config(cfg) -> None:
  """Raises ValueError naming the field for missing, unknown or inconsistent values."""
  fields = config_fields(cfg)
  known = ENCODER_FIELDS + EXECUTION_FIELDS + PROMPT_FIELDS
  missing = [f for f in ENCODER_FIELDS if f not in fields]
  unknown = sorted(set(fields) - set(known))
  if missing or unknown:
    raise ValueError(f"text encoder config: missing fields {missing}, unknown fields {unknown} "
                     f"(known: {list(known)}).")
  for name in ENCODER_FIELDS[:-1]:
    if not isinstance(fields[name], (int, np.integer)) or fields[name] <= 0:
      raise ValueError(f"text encoder config: {name} must be a positive integer, got "
                       f"{fields[name]!r}.")
  if fields["dim_attn"] % fields["num_heads"]:
    raise ValueError(f"text encoder config: dim_attn={fields['dim_attn']} is not divisible by "
                     f"num_heads={fields['num_heads']}.")
  if fields["num_buckets"] % 4:
    raise ValueError(f"text encoder config: num_buckets={fields['num_buckets']} must be a "
                     "multiple of 4 (two directions, each half exact and half log-spaced).")
  if fields["max_distance"] <= fields["num_buckets"] // 4:
    raise ValueError(f"text encoder config: max_distance={fields['max_distance']} must exceed "
                     f"num_buckets / 4 = {fields['num_buckets'] // 4}.")
  if jnp.dtype(fields["dtype"]).name not in DTYPES:
    raise ValueError(f"text encoder config: dtype must be one of {DTYPES}, got "
                     f"{fields['dtype']!r}.")
  if "remat_policy" in fields and fields["remat_policy"] not in layers.REMAT_POLICIES:
    raise ValueError(f"text encoder config: remat_policy must be one of "
                     f"{list(layers.REMAT_POLICIES)}, got {fields['remat_policy']!r}.")


def encoder_kwargs(cfg) -> dict[str, Any]:
  """The validated UMT5Encoder arguments of an encoder config (absent switches: the
  module's defaults)."""
  validate_encoder_config(cfg)
  fields = config_fields(cfg)
  kwargs = {f: int(fields[f]) for f in ENCODER_FIELDS[:-1]}
  kwargs["dtype"] = jnp.dtype(fields["dtype"])
  kwargs["scan_layers"] = bool(fields["scan_layers"]) if "scan_layers" in fields else (
      UMT5Encoder.scan_layers)
  kwargs["remat_policy"] = fields["remat_policy"] if "remat_policy" in fields else (
      UMT5Encoder.remat_policy)
  return kwargs


def build_umt5(cfg) -> UMT5Encoder:
  """The umT5 encoder from an encoder config (a ConfigDict, a mapping or an attribute object).

  Required fields: vocab_size, dim, dim_attn, dim_ffn, num_heads, num_layers, num_buckets,
  max_distance, dtype ('float32' | 'bfloat16'); optional scan_layers, remat_policy; the
  prompt fields of configs/umt5.py's `text_encoder` section are accepted and not read here.
  `enc.apply({'params': p}, ids, mask)`: ids int32 [B, L], mask [B, L] -> float32 [B, L, dim].
  """
  return UMT5Encoder(**encoder_kwargs(cfg))
