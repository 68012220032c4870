"""Class-to-image GRN transformer (official `GRN_ind` / `GRN_bit`, a JiT-style DiT).

Input: a mixed label map (each label either a kept prediction or a random label), the keep ratio
t of that map, and a class. Output: logits for every label.

  labels      int32   [B, h, w, D]      D = latent_dim ('ind') or hbq_rounds * latent_dim ('bit')
  keep_ratio  float32 [B]               official `t`, 0 = all random, 1 = clean
  class_labels int32  [B]               num_classes = the null (unconditional) class
  -> logits   float32 [B, h, w, D, K]   K = 2^hbq_rounds ('ind') or 2 ('bit')

Blocks before `in_context_start` see the h*w image tokens; from that block on, `in_context_len`
class tokens (the label embedding plus a learned position embedding) are prepended; they are
left out of RoPE (identity rotation) and dropped before the final layer.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from grn_jax import config_check
from grn_jax import hbq
from grn_jax.models import attention
from grn_jax.models import layers
from grn_jax.models.layers import REMAT_POLICIES

Dtype = Any


class GRNBlock(nn.Module):
  """adaLN-zero block: x += gate * Attn(mod(norm(x))); x += gate * SwiGLU(mod(norm(x)))."""
  num_heads: int
  mlp_hidden: int
  dtype: Dtype = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x, c, cos, sin):
    hidden = x.shape[-1]
    mod = layers.Dense((6, hidden), ("embed", "chunk", "embed_out"), dtype=self.dtype,
                       kernel_init=nn.initializers.zeros, name="adaLN_modulation")(nn.silu(c))
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = [
        mod[:, i] for i in range(6)]
    h = layers.modulate(layers.RMSNorm(name="norm1")(x), shift_msa, scale_msa)
    attn = layers.Attention(self.num_heads, self.dtype, self.attention_impl, name="attn")
    x = x + gate_msa[:, None] * attn(h, cos, sin)
    h = layers.modulate(layers.RMSNorm(name="norm2")(x), shift_mlp, scale_mlp)
    x = x + gate_mlp[:, None] * layers.SwiGLU(self.mlp_hidden, self.dtype, name="mlp")(h)
    return nn.with_logical_constraint(x, ("batch", "length", "act_embed"))


class _ScanBlock(GRNBlock):
  """GRNBlock with the (carry, broadcast args) -> (carry, None) signature of nn.scan."""

  def __call__(self, x, c, cos, sin):  # pytype: disable=signature-mismatch
    return super().__call__(x, c, cos, sin), None


class GRNC2I(nn.Module):
  """The C2I refinement transformer; fields mirror `config.model` (see configs/c2i.py)."""
  hidden_size: int
  depth: int
  num_heads: int
  mlp_ratio: float
  bottleneck_dim: int
  in_context_len: int
  in_context_start: int
  input_size: int
  patch_size: int
  num_classes: int
  latent_dim: int
  hbq_rounds: int
  label_mode: str
  dtype: Dtype = jnp.float32
  attention_impl: str = "auto"
  remat_policy: str = "none"
  scan_layers: bool = False

  @property
  def label_classes(self) -> int:
    return hbq.num_classes(self.hbq_rounds, self.label_mode)

  @property
  def labels_per_token(self) -> int:
    return hbq.num_labels(self.latent_dim, self.hbq_rounds, self.label_mode)

  @property
  def grid_size(self) -> int:
    return self.input_size // self.patch_size

  def _check_inputs(self, labels, keep_ratio, class_labels):
    shape = (self.input_size, self.input_size, self.labels_per_token)
    if labels.ndim != 4 or tuple(labels.shape[1:]) != shape:
      raise ValueError(f"labels must be int [batch, {shape[0]}, {shape[1]}, {shape[2]}] for "
                       f"label_mode={self.label_mode!r}, got {labels.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(f"labels must be integers, got {labels.dtype}.")
    batch = labels.shape[0]
    if keep_ratio.shape != (batch,):
      raise ValueError(f"keep_ratio must be float [{batch}], got {keep_ratio.shape}.")
    if class_labels.shape != (batch,):
      raise ValueError(f"class_labels must be int [{batch}], got {class_labels.shape}.")

  @nn.compact
  def __call__(self, labels: jnp.ndarray, keep_ratio: jnp.ndarray,
               class_labels: jnp.ndarray) -> jnp.ndarray:
    keep_ratio = jnp.asarray(keep_ratio, jnp.float32)
    class_labels = jnp.asarray(class_labels)
    self._check_inputs(labels, keep_ratio, class_labels)
    batch, p, g = labels.shape[0], self.patch_size, self.grid_size
    hidden, classes, dim = self.hidden_size, self.label_classes, self.labels_per_token
    in_channels = classes * dim

    # Conditioning: c = t_emb + y_emb (label dropout to the null class happens outside).
    t_emb = layers.TimestepEmbedder(hidden, dtype=self.dtype, name="t_embedder")(keep_ratio)
    table = self.param("y_embedder_table", nn.with_logical_partitioning(
        nn.initializers.normal(0.02), ("classes", "embed")), (self.num_classes + 1, hidden),
                       jnp.float32)
    y_emb = jnp.take(table, class_labels, axis=0).astype(self.dtype)
    c = t_emb + y_emb

    # Bottleneck patch embedding of the class-major one-hot labels.
    x = hbq.onehot_class_major(labels, classes, self.dtype)  # [B, H, W, K*D]
    x = x.reshape(batch, g, p, g, p, in_channels).transpose(0, 1, 3, 2, 4, 5)
    x = layers.Dense((self.bottleneck_dim,), ("patch_h", "patch_w", "onehot", "bottleneck"),
                     in_dims=3, use_bias=False, dtype=self.dtype, name="x_embedder_proj1")(x)
    x = layers.Dense((hidden,), ("bottleneck", "embed"), dtype=self.dtype,
                     name="x_embedder_proj2")(x)
    x = x.reshape(batch, g * g, hidden)
    pos_embed = self.param("pos_embed", nn.with_logical_partitioning(
        lambda *_: jnp.asarray(layers.sincos_pos_embed_2d(hidden, g))[None],
        (None, "length", "embed")), (1, g * g, hidden), jnp.float32)
    x = x + pos_embed.astype(self.dtype)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))

    head_dim = hidden // self.num_heads
    cos, sin = (jnp.asarray(a) for a in layers.rope_tables(head_dim, g))
    mlp_hidden = layers.swiglu_hidden(hidden, self.mlp_ratio)
    block = dict(num_heads=self.num_heads, mlp_hidden=mlp_hidden, dtype=self.dtype,
                 attention_impl=self.attention_impl)
    stack = dict(block_cls=_ScanBlock, block=block, scan=self.scan_layers,
                 remat_policy=self.remat_policy)
    start = self.in_context_start if self.in_context_len > 0 else self.depth
    if start > 0:
      x, _ = layers.BlockStack(count=start, name="blocks_pre", **stack)(x, c, cos, sin)
    if self.in_context_len > 0:
      posemb = self.param("in_context_posemb", nn.with_logical_partitioning(
          nn.initializers.normal(0.02), (None, "length", "embed")),
                          (1, self.in_context_len, hidden), jnp.float32)
      tokens = y_emb[:, None, :] + posemb.astype(self.dtype)
      x = jnp.concatenate([tokens, x], axis=1)
      cos, sin = (jnp.asarray(a) for a in layers.rope_tables(head_dim, g, self.in_context_len))
      x, _ = layers.BlockStack(count=self.depth - start, name="blocks_post", **stack)(
          x, c, cos, sin)
      x = x[:, self.in_context_len:]

    # Final adaLN layer, in float32 as in the official code.
    x, c = x.astype(jnp.float32), c.astype(jnp.float32)
    mod = layers.Dense((2, hidden), ("embed", "chunk", "embed_out"), dtype=jnp.float32,
                       kernel_init=nn.initializers.zeros, name="final_adaLN_modulation")(nn.silu(c))
    x = layers.modulate(layers.RMSNorm(name="final_norm")(x), mod[:, 0], mod[:, 1])
    x = layers.Dense((p, p, classes, dim), ("embed", "patch_h", "patch_w", "vocab", "labels"),
                     dtype=jnp.float32, kernel_init=nn.initializers.zeros,
                     name="final_linear")(x)  # [B, g*g, p, p, K, D]
    x = x.reshape(batch, g, g, p, p, classes, dim).transpose(0, 1, 3, 2, 4, 6, 5)
    return x.reshape(batch, g * p, g * p, dim, classes)


MODEL_FIELDS = ("hidden_size", "depth", "num_heads", "mlp_ratio", "bottleneck_dim",
                "in_context_len", "in_context_start", "input_size", "patch_size", "num_classes",
                "latent_dim", "hbq_rounds", "label_mode", "dtype")
SWITCH_FIELDS = ("name", "remat_policy", "scan_layers", "attention_impl")


def validate_model_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for unknown, missing or inconsistent values."""
  config_check.check_fields(cfg, "model", MODEL_FIELDS + SWITCH_FIELDS)
  if cfg.label_mode not in hbq.LABEL_MODES:
    raise ValueError(f"config.model.label_mode must be one of {hbq.LABEL_MODES}, "
                     f"got {cfg.label_mode!r}.")
  for field in ("hidden_size", "depth", "num_heads", "input_size", "patch_size", "num_classes",
                "latent_dim", "hbq_rounds", "bottleneck_dim"):
    if not cfg[field] >= 1:
      raise ValueError(f"config.model.{field} must be >= 1, got {cfg[field]}.")
  if cfg.hidden_size % cfg.num_heads:
    raise ValueError(f"config.model.hidden_size={cfg.hidden_size} is not divisible by "
                     f"num_heads={cfg.num_heads}.")
  if (cfg.hidden_size // cfg.num_heads) % 4:
    raise ValueError("config.model: head_dim = hidden_size / num_heads must be divisible by 4 "
                     "(2-D RoPE on interleaved pairs).")
  if cfg.input_size % cfg.patch_size:
    raise ValueError(f"config.model.input_size={cfg.input_size} is not divisible by "
                     f"patch_size={cfg.patch_size}.")
  if cfg.in_context_len > 0 and not 0 <= cfg.in_context_start < cfg.depth:
    raise ValueError(f"config.model.in_context_start={cfg.in_context_start} must lie in "
                     f"[0, depth={cfg.depth}).")
  if cfg.remat_policy not in REMAT_POLICIES:
    raise ValueError(f"config.model.remat_policy must be one of {list(REMAT_POLICIES)}.")
  if cfg.attention_impl not in attention.IMPLS:
    raise ValueError(f"config.model.attention_impl must be one of {attention.IMPLS}, "
                     f"got {cfg.attention_impl!r}.")
  if cfg.dtype not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"config.model.dtype must be float32, bfloat16 or float16, got {cfg.dtype!r}.")


def build_c2i(cfg: ml_collections.ConfigDict) -> GRNC2I:
  """The C2I module from `config.model`."""
  validate_model_config(cfg)
  kwargs = {f: cfg[f] for f in MODEL_FIELDS if f != "dtype"}
  return GRNC2I(**kwargs, dtype=jnp.dtype(cfg.dtype), attention_impl=cfg.attention_impl,
                remat_policy=cfg.remat_policy, scan_layers=bool(cfg.scan_layers))
