"""Text-to-image / text-to-video GRN transformer (official `GRN` / `GRN2b`, grn/models/grn.py).

Qwen3-style blocks without adaLN: x += o(Attn(RMSNorm(x))); x += down(silu(gate(h)) * up(h)),
h = RMSNorm(x), bias-free projections, RMSNorm on q and k per head, grouped-query heads, 3-D
RoPE. The keep ratio enters only as one extra "scale token" (official `pt_embedder`).

The text prefix runs once (`encode_text`): the prompt's features go through `text_proj` and every
block on their own (text never attends visual tokens), and each layer's text keys (after k-norm
and RoPE) and values are kept. `denoise` runs the visual tokens plus the scale token; in every
layer they attend their own prompt's cached text keys and all their own visual keys.

  encode_text: features float32 [B, L, text_dim], mask bool [B, L]
               -> TextCache(keys, values float32 [depth, B, L, num_kv_heads, head_dim], mask)
  denoise:     labels int32 [B, T, h, w, D] in {0, 1} (D = hbq_rounds * latent_dim, bit labels
               j = round * latent_dim + channel), scale float32 [B], text, h_div_w
               -> logits float32 [B, T, h, w, D, 2]

RoPE positions (GRN-SPEC §G.3, §L.5-7): text token p (its rank among the valid tokens) ->
(p, 0, 0); the scale token -> (512, 0, 0); visual token (f, y, x) -> (600 + f,
round(y * uph / h), round(x * upw / w)) with (uph, upw) of the aspect template nearest h_div_w.

Training runs packed rows instead (`packed`, the official sequence packing; grn_jax/data/packing.py
builds the rows): several examples' visual tokens and scale tokens, then their texts, in one
sequence [B, V + L] with segment ids; each layer makes two attention calls with plain segment
equality, so every attention impl applies: visual-region queries against the whole row (a visual
or scale token sees its own example's visual, scale and text tokens), text queries against the
text region (a text token sees its own text only). A packed row's logits equal the sampling path
(encode_text + denoise) of each of its examples (tests/models/test_grn_t2iv_packed.py).

  packed: labels int [B, V, D], scale float32 [B, S], features [B, L, text_dim],
          visual_ids int32 [B, V], text_ids int32 [B, L] (example 1..S, 0 = padding),
          positions int32 [B, V + L, 3] -> logits float32 [B, V, D, 2]

The residual stream is float32 (as the official bf16-autocast run keeps it); matmuls run in
`dtype`, the output head in float32.
"""

from typing import Any

import flax.linen as nn
import flax.struct
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax import hbq
from grn_jax import resolution
from grn_jax.models import attention
from grn_jax.models import layers
from grn_jax.models.layers import REMAT_POLICIES

Dtype = Any
FRAME_OFFSET = 600          # first frame position (the official table reserves 600 text ones)
SCALE_TOKEN_POSITION = 512  # the scale token's position in the text table
LABEL_CLASSES = 2           # bit labels


@flax.struct.dataclass
class TextCache:
  """The text prefix of `encode_text`; fields also read as text['keys'] etc.

  keys, values float32 [depth, B, L, num_kv_heads, head_dim] (keys after k-norm and RoPE,
  zero at padded rows); mask bool [B, L].
  """
  keys: jnp.ndarray
  values: jnp.ndarray
  mask: jnp.ndarray

  def __getitem__(self, name: str) -> jnp.ndarray:
    return getattr(self, name)


def mlp_width(hidden_size: int, mlp_ratio: float) -> int:
  """Official SwiGLU width round(hidden * mlp_ratio / 256) * 256 (8192 for GRN-2B)."""
  return round(hidden_size * mlp_ratio / 256) * 256


def visual_positions(frames: int, height: int, width: int,
                     h_div_w: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """RoPE (frame, height, width) positions int32 [frames*height*width + 1] of the visual tokens
  in (f, y, x) row-major order followed by the scale token."""
  uph, upw = resolution.rope_grid(resolution.nearest_template(h_div_w))
  f, y, x = np.meshgrid(FRAME_OFFSET + np.arange(frames, dtype=np.int32),
                        resolution.rope_spatial_indices(height, uph),
                        resolution.rope_spatial_indices(width, upw), indexing="ij")
  def with_scale(a, value):
    return np.concatenate([a.reshape(-1), np.asarray([value], np.int32)])
  return with_scale(f, SCALE_TOKEN_POSITION), with_scale(y, 0), with_scale(x, 0)


def _dense(features, axes, dtype, name, in_dims=1):
  return layers.Dense(tuple(features), axes, in_dims=in_dims, use_bias=False, dtype=dtype,
                      kernel_init=nn.initializers.normal(0.02), name=name)


class Attention(nn.Module):
  """q/k/v/o without bias, RMSNorm on q and k per head, RoPE, GQA, optional text prefix."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  dtype: Dtype = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x, text_kv, cos, sin, kv_mask, segments=None):
    dt = self.dtype
    q = _dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), dt, "q_proj")(x)
    k = _dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "kv"), dt, "k_proj")(x)
    v = _dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "kv"), dt, "v_proj")(x)
    q = layers.apply_rope(layers.RMSNorm(name="q_norm")(q.astype(jnp.float32)), cos, sin)
    k = layers.apply_rope(layers.RMSNorm(name="k_norm")(k.astype(jnp.float32)), cos, sin)
    q = nn.with_logical_constraint(q.astype(dt), ("batch", "length", "act_heads", "kv"))
    k = nn.with_logical_constraint(k.astype(dt), ("batch", "length", "act_kv_heads", "kv"))
    if segments is not None:
      out = packed_attention(q, k, v, *segments, impl=self.impl)
    else:
      keys, values = k, v
      if text_kv is not None:
        keys = jnp.concatenate([text_kv[0].astype(dt), k], axis=1)
        values = jnp.concatenate([text_kv[1].astype(dt), v], axis=1)
      out = attention.attention(q, keys, values, kv_mask=kv_mask, impl=self.impl)
    out = _dense((x.shape[-1],), ("heads", "kv", "embed"), dt, "o_proj", in_dims=2)(out)
    return out, (k, v)


def packed_attention(q, k, v, visual_ids, text_ids, impl: str = "auto"):
  """Attention of a packed row [visual region V | text region L] (see the module docstring).

  q [B, V + L, Hq, hd], k, v [B, V + L, Hkv, hd]; visual_ids int [B, V], text_ids int [B, L]
  (example 1..S, 0 = padding: padded keys are masked, padded queries return zeros).
  """
  num_visual = visual_ids.shape[1]
  ids = jnp.concatenate([visual_ids, text_ids], axis=1)
  visual = attention.attention(q[:, :num_visual], k, v, kv_mask=ids > 0, q_segment_ids=visual_ids,
                               kv_segment_ids=ids, impl=impl)
  text = attention.attention(q[:, num_visual:], k[:, num_visual:], v[:, num_visual:],
                             kv_mask=text_ids > 0, q_segment_ids=text_ids,
                             kv_segment_ids=text_ids, impl=impl)
  return jnp.concatenate([visual, text], axis=1)


class GatedMLP(nn.Module):
  """down(silu(gate(x)) * up(x)), no biases (official Qwen3MLP)."""
  width: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    gate = _dense((self.width,), ("embed", "mlp"), self.dtype, "gate_proj")(x)
    up = _dense((self.width,), ("embed", "mlp"), self.dtype, "up_proj")(x)
    h = nn.with_logical_constraint(nn.silu(gate) * up, ("batch", "length", "act_mlp"))
    return _dense((x.shape[-1],), ("mlp", "embed"), self.dtype, "down_proj")(h)


class Block(nn.Module):
  """One Qwen3 block. x float32 [B, S, C]; text_kv None (text pass) or this layer's text
  (keys, values) [B, L, Hkv, hd]; segments None or (visual_ids, text_ids) of a packed row.
  Returns (x, the text pass's (k, v), else None) for nn.scan."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_width: int
  dtype: Dtype = jnp.float32
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x, text_kv, cos, sin, kv_mask, segments=None):
    h = layers.RMSNorm(name="input_layernorm")(x)
    out, kv = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.dtype,
                        self.attention_impl, name="attn")(h, text_kv, cos, sin, kv_mask,
                                                          segments)
    x = x + out.astype(jnp.float32)
    h = layers.RMSNorm(name="post_attention_layernorm")(x)
    x = x + GatedMLP(self.mlp_width, self.dtype, name="mlp")(h).astype(jnp.float32)
    x = nn.with_logical_constraint(x, ("batch", "length", "act_embed"))
    return x, (kv if text_kv is None and segments is None else None)


class GRNT2IV(nn.Module):
  """The T2I/T2V refinement transformer; fields mirror `config.model` (configs/t2iv.py)."""
  hidden_size: int
  depth: int
  num_heads: int
  num_kv_heads: int
  mlp_ratio: float
  block_chunks: int
  latent_dim: int
  hbq_rounds: int
  text_dim: int
  dtype: Dtype = jnp.float32
  remat_policy: str = "none"
  scan_layers: bool = False
  attention_impl: str = "auto"

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def labels_per_token(self) -> int:
    return hbq.num_labels(self.latent_dim, self.hbq_rounds, "bit")

  def setup(self):
    hidden, normal = self.hidden_size, nn.initializers.normal(0.02)
    self.text_proj = layers.Dense((hidden,), ("text_embed", "embed"), dtype=self.dtype,
                                  kernel_init=normal)
    self.word_embed = layers.Dense((hidden,), ("onehot", "embed"), dtype=self.dtype,
                                   kernel_init=normal)
    self.pt_embedder = layers.TimestepEmbedder(hidden, dtype=self.dtype)
    block = dict(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads,
                 head_dim=self.head_dim, mlp_width=mlp_width(hidden, self.mlp_ratio),
                 dtype=self.dtype, attention_impl=self.attention_impl)
    # Text pass (text_kv None): returns (x, the per-layer (k, v) stacked [depth, B, L, Hkv, hd]);
    # visual pass (text_kv: that stack, one layer's slice each) and packed pass: (x, None).
    self.blocks = layers.BlockStack(Block, self.depth, block, scan=self.scan_layers,
                                    remat_policy=self.remat_policy, per_layer=(True,))
    self.head_norm = layers.RMSNorm()
    self.head_proj = layers.Dense((self.labels_per_token, LABEL_CLASSES),
                                  ("embed", "labels", "vocab"), dtype=jnp.float32,
                                  kernel_init=normal)

  def encode_text(self, features: jnp.ndarray, mask: jnp.ndarray) -> TextCache:
    """features float32 [B, L, text_dim] (rows where mask is False are ignored), mask bool
    [B, L] -> the per-layer text keys and values (see the module docstring)."""
    features = jnp.asarray(features)
    mask = jnp.asarray(mask)
    if features.ndim != 3 or features.shape[-1] != self.text_dim:
      raise ValueError(f"text features must be float [batch, length, {self.text_dim}] "
                       f"(text_dim), got {features.shape}.")
    if mask.shape != features.shape[:2]:
      raise ValueError(f"text mask must be bool {features.shape[:2]}, got {mask.shape}.")
    mask = mask.astype(bool)
    features = jnp.where(mask[..., None], features, 0)
    x = self.text_proj(features).astype(jnp.float32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)  # rank among the valid tokens
    cos, sin = layers.rope_3d_tables(positions, 0, 0, self.head_dim)
    _, (keys, values) = self.blocks(x, None, cos[:, :, None], sin[:, :, None], mask)
    valid = mask[None, :, :, None, None]
    return TextCache(keys=jnp.where(valid, keys, 0).astype(jnp.float32),
                     values=jnp.where(valid, values, 0).astype(jnp.float32), mask=mask)

  def denoise(self, labels: jnp.ndarray, scale: jnp.ndarray, text: TextCache,
              h_div_w: float = 1.0) -> jnp.ndarray:
    """Logits float32 [B, T, h, w, D, 2] of every bit label (see the module docstring).

    `h_div_w` (a Python float) is snapped to the nearest aspect template, which sets the RoPE
    positions of the h x w grid.
    """
    labels, scale = jnp.asarray(labels), jnp.asarray(scale, jnp.float32)
    text = TextCache(*(jnp.asarray(text[f]) for f in ("keys", "values", "mask")))
    self._check_denoise_inputs(labels, scale, text)
    batch, frames, height, width, dim = labels.shape
    tokens = frames * height * width
    x = self.word_embed(hbq.onehot_label_major(labels, LABEL_CLASSES, self.dtype))
    x = x.reshape(batch, tokens, self.hidden_size).astype(jnp.float32)
    scale_token = self.pt_embedder(scale).astype(jnp.float32)[:, None]
    x = nn.with_logical_constraint(jnp.concatenate([x, scale_token], axis=1),
                                   ("batch", "length", "act_embed"))
    cos, sin = layers.rope_3d_tables(*visual_positions(frames, height, width, float(h_div_w)),
                                     self.head_dim)
    kv_mask = jnp.concatenate([text.mask, jnp.ones((batch, tokens + 1), bool)], axis=1)
    x, _ = self.blocks(x, (text.keys, text.values), cos[:, None], sin[:, None], kv_mask)
    logits = self.head_proj(self.head_norm(x[:, :tokens]))
    return logits.reshape(batch, frames, height, width, dim, LABEL_CLASSES)

  def packed(self, labels: jnp.ndarray, scale: jnp.ndarray, features: jnp.ndarray,
             visual_ids: jnp.ndarray, text_ids: jnp.ndarray, positions: jnp.ndarray
             ) -> jnp.ndarray:
    """Logits float32 [B, V, D, 2] of packed rows (the training forward).

    Args:
      labels: int [B, V, D] bit labels of the visual region (any value at scale tokens and
        padding).
      scale: float32 [B, S] keep ratio of each example's scale token (nominal, as the
        official trainer).
      features: float [B, L, text_dim] text features of the text region (ignored at padding).
      visual_ids, text_ids: int32 [B, V], [B, L]: example 1..S of each slot, 0 = padding.
      positions: int32 [B, V + L, 3] RoPE (frame, height, width) of every slot; a visual-region
        slot at frame position 512 is its example's scale token.
    """
    labels, scale = jnp.asarray(labels), jnp.asarray(scale, jnp.float32)
    features, positions = jnp.asarray(features), jnp.asarray(positions)
    visual_ids, text_ids = jnp.asarray(visual_ids), jnp.asarray(text_ids)
    self._check_packed_inputs(labels, scale, features, visual_ids, text_ids, positions)
    batch, num_visual, dim = labels.shape
    x = self.word_embed(hbq.onehot_label_major(labels, LABEL_CLASSES, self.dtype))
    scale_tokens = self.pt_embedder(scale.reshape(-1)).astype(jnp.float32)
    scale_tokens = scale_tokens.reshape(batch, scale.shape[1], self.hidden_size)
    example = jnp.maximum(visual_ids - 1, 0)
    is_scale = (positions[:, :num_visual, 0] == SCALE_TOKEN_POSITION) & (visual_ids > 0)
    x = jnp.where(is_scale[..., None],
                  jnp.take_along_axis(scale_tokens, example[..., None], axis=1),
                  x.astype(jnp.float32))
    text = self.text_proj(jnp.where((text_ids > 0)[..., None], features, 0))
    x = nn.with_logical_constraint(jnp.concatenate([x, text.astype(jnp.float32)], axis=1),
                                   ("batch", "length", "act_embed"))
    cos, sin = layers.rope_3d_tables(positions[..., 0], positions[..., 1], positions[..., 2],
                                     self.head_dim)
    x, _ = self.blocks(x, None, cos[:, :, None], sin[:, :, None], None, (visual_ids, text_ids))
    logits = self.head_proj(self.head_norm(x[:, :num_visual]))
    return logits.reshape(batch, num_visual, dim, LABEL_CLASSES)

  def __call__(self, labels: jnp.ndarray, scale: jnp.ndarray, features: jnp.ndarray,
               mask: jnp.ndarray, h_div_w: float = 1.0) -> jnp.ndarray:
    """encode_text then denoise."""
    return self.denoise(labels, scale, self.encode_text(features, mask), h_div_w=h_div_w)

  def _check_denoise_inputs(self, labels, scale, text):
    if labels.ndim != 5 or labels.shape[-1] != self.labels_per_token:
      raise ValueError(f"labels must be int [batch, frames, h, w, {self.labels_per_token}] "
                       f"(hbq_rounds * latent_dim bit labels), got {labels.shape}.")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(f"labels must be integers in {{0, 1}}, got {labels.dtype}.")
    batch = labels.shape[0]
    if scale.shape != (batch,):
      raise ValueError(f"scale (the keep ratio of the scale token) must be float [{batch}], "
                       f"got {scale.shape}.")
    want = (self.depth, batch, text.mask.shape[-1], self.num_kv_heads, self.head_dim)
    if (text.keys.shape != want or text.values.shape != want
        or text.mask.shape != (batch, want[2])):
      raise ValueError(f"text must come from encode_text of this model for {batch} prompts: "
                       f"keys/values {want} and mask {(batch, want[2])}, got "
                       f"{text.keys.shape}, {text.values.shape}, {text.mask.shape}.")


  def _check_packed_inputs(self, labels, scale, features, visual_ids, text_ids, positions):
    if labels.ndim != 3 or labels.shape[-1] != self.labels_per_token:
      raise ValueError(f"packed labels must be int [batch, visual_tokens, "
                       f"{self.labels_per_token}], got {labels.shape}.")
    batch, num_visual = labels.shape[:2]
    if features.ndim != 3 or features.shape[0] != batch or features.shape[-1] != self.text_dim:
      raise ValueError(f"packed text features must be float [{batch}, text_tokens, "
                       f"{self.text_dim}] (text_dim), got {features.shape}.")
    num_text = features.shape[1]
    want = {"visual_ids": (visual_ids, (batch, num_visual)),
            "text_ids": (text_ids, (batch, num_text)),
            "positions": (positions, (batch, num_visual + num_text, 3))}
    for name, (array, shape) in want.items():
      if array.shape != shape or not jnp.issubdtype(array.dtype, jnp.integer):
        raise ValueError(f"packed {name} must be int {shape}, got {array.dtype} {array.shape}.")
    if scale.ndim != 2 or scale.shape[0] != batch:
      raise ValueError(f"packed scale must be float [{batch}, max_samples], got {scale.shape}.")


MODEL_FIELDS = ("hidden_size", "depth", "num_heads", "num_kv_heads", "mlp_ratio", "block_chunks",
                "latent_dim", "hbq_rounds", "text_dim", "dtype")
# Execution switches: configs/t2iv.py sets them; a model section without them (e.g. one written
# by hand with the contract fields only) runs with the module's defaults.
SWITCH_FIELDS = ("remat_policy", "scan_layers", "attention_impl")
DTYPES = ("float32", "bfloat16", "float16")


def validate_t2iv_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for unknown, missing or inconsistent values."""
  config_check.check_fields(cfg, "model", MODEL_FIELDS, optional=SWITCH_FIELDS + ("name",))
  keys = set(cfg.keys())
  if cfg.hidden_size % cfg.num_heads:
    raise ValueError(f"config.model.hidden_size={cfg.hidden_size} is not divisible by "
                     f"num_heads={cfg.num_heads}.")
  if cfg.num_kv_heads < 1 or cfg.num_heads % cfg.num_kv_heads:
    raise ValueError(f"config.model.num_heads={cfg.num_heads} must be a multiple of "
                     f"num_kv_heads={cfg.num_kv_heads}.")
  head_dim = cfg.hidden_size // cfg.num_heads
  if head_dim % 2 or head_dim < 6:
    raise ValueError(f"config.model: head_dim = hidden_size / num_heads = {head_dim} must be "
                     "even and at least 6 (3-D RoPE on interleaved pairs).")
  if cfg.block_chunks < 1 or cfg.depth % cfg.block_chunks:
    raise ValueError(f"config.model.depth={cfg.depth} must be divisible by "
                     f"block_chunks={cfg.block_chunks} (the official checkpoint layout).")
  hbq.num_labels(cfg.latent_dim, cfg.hbq_rounds, "bit")  # validates hbq_rounds
  if "remat_policy" in keys and cfg.remat_policy not in REMAT_POLICIES:
    raise ValueError(f"config.model.remat_policy must be one of {list(REMAT_POLICIES)}.")
  if "attention_impl" in keys and cfg.attention_impl not in attention.IMPLS:
    raise ValueError(f"config.model.attention_impl must be one of {attention.IMPLS}, "
                     f"got {cfg.attention_impl!r}.")
  if jnp.dtype(cfg.dtype).name not in DTYPES:
    raise ValueError(f"config.model.dtype must be one of {DTYPES}, got {cfg.dtype!r}.")


def build_t2iv(cfg: ml_collections.ConfigDict) -> GRNT2IV:
  """The T2I/T2V module from `config.model`."""
  validate_t2iv_config(cfg)
  kwargs = {f: cfg[f] for f in MODEL_FIELDS + SWITCH_FIELDS if f in cfg and f != "dtype"}
  return GRNT2IV(**kwargs, dtype=jnp.dtype(cfg.dtype))
