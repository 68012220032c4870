"""A float64 numpy transcription of the official T2I/T2V GRN (GRN-SPEC §G, §L) on an official-
layout state dict, one prompt at a time with only its valid text tokens (as the official varlen
attention sees them), and the official key/shape list (GRN-PARAM-SHAPES §3)."""

import math

import numpy as np

TEMPLATES = (3.0, 2.5, 2.0, 1.777, 1.5, 1.333, 1.16, 1.0, 0.862, 0.75, 0.666, 0.562, 0.5, 0.4,
             0.333)


def official_shapes(hidden, depth, heads, kv_heads, mlp_ratio, block_chunks, labels, text_dim):
  """{key: torch shape} of the official GRN state dict (GRN-PARAM-SHAPES §3)."""
  hd = hidden // heads
  width = round(hidden * mlp_ratio / 256) * 256
  shapes = {
      "text_proj.weight": (hidden, text_dim), "text_proj.bias": (hidden,),
      "word_embed.weight": (hidden, 2 * labels), "word_embed.bias": (hidden,),
      "head.proj.weight": (2 * labels, hidden), "head.proj.bias": (2 * labels,),
      "head.norm.weight": (hidden,),
      "pt_embedder.mlp.0.weight": (hidden, 256), "pt_embedder.mlp.0.bias": (hidden,),
      "pt_embedder.mlp.2.weight": (hidden, hidden), "pt_embedder.mlp.2.bias": (hidden,),
  }
  per_chunk = depth // block_chunks
  for b in range(depth):
    p = f"block_chunks.{b // per_chunk}.module.{b % per_chunk}"
    shapes.update({
        f"{p}.attn.q_proj.weight": (heads * hd, hidden),
        f"{p}.attn.k_proj.weight": (kv_heads * hd, hidden),
        f"{p}.attn.v_proj.weight": (kv_heads * hd, hidden),
        f"{p}.attn.o_proj.weight": (hidden, heads * hd),
        f"{p}.attn.q_norm.weight": (hd,), f"{p}.attn.k_norm.weight": (hd,),
        f"{p}.mlp.gate_proj.weight": (width, hidden), f"{p}.mlp.up_proj.weight": (width, hidden),
        f"{p}.mlp.down_proj.weight": (hidden, width),
        f"{p}.input_layernorm.weight": (hidden,),
        f"{p}.post_attention_layernorm.weight": (hidden,),
    })
  return shapes


def random_state_dict(shapes, seed=0, scale=0.15):
  """Random weights; norm weights 1 + 0.2 N(0, 1) (non-trivial)."""
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in shapes.items():
    if "norm" in key:
      out[key] = (1 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
    else:
      fan_in = shape[1] if len(shape) == 2 else 16
      out[key] = (scale * rng.standard_normal(shape) * (16 / fan_in) ** 0.5).astype(np.float32)
  return out


# --- formulas --------------------------------------------------------------------------------


def rope_angles(frame, height, width, head_dim):
  """[L, head_dim / 2] pair angles: 21/21/22-style split, theta_k = 1e4^(-k/n)."""
  pairs = head_dim // 2
  n = pairs // 3
  last = pairs - 2 * n
  inv_former = 10000.0 ** (-np.arange(n) / n)
  inv_last = 10000.0 ** (-np.arange(last) / last)
  return np.concatenate([np.outer(frame, inv_former), np.outer(height, inv_former),
                         np.outer(width, inv_last)], axis=1)


def visual_positions(frames, h, w, h_div_w):
  """(frame, height, width) of the visual tokens (f, y, x row-major), then the scale token."""
  r = TEMPLATES[int(np.argmin([abs(t - h_div_w) for t in TEMPLATES]))]
  upw_float = math.sqrt(225 * 75 / r)
  uph, upw = int(r * upw_float), int(upw_float)
  # Spatial index = round-half-even(y * uph / h) with the product in float32 (torch arange * float).
  ys = np.round(np.arange(h, dtype=np.float32) * np.float32(uph / h))
  xs = np.round(np.arange(w, dtype=np.float32) * np.float32(upw / w))
  f, y, x = np.meshgrid(600 + np.arange(frames), ys, xs, indexing="ij")
  return (np.append(f.ravel(), 512), np.append(y.ravel(), 0), np.append(x.ravel(), 0))


def rotate(x, angles):
  """x [L, H, hd] with interleaved pairs (x0, x1) -> (x0 c - x1 s, x1 c + x0 s)."""
  c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
  x0, x1 = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = x0 * c - x1 * s
  out[..., 1::2] = x1 * c + x0 * s
  return out


def rms_norm(x, weight, eps=1e-6):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
  return x / (1 + np.exp(-x))


def attend(q, k, v):
  """q [N, Hq, hd], k/v [M, Hkv, hd]; query head h reads kv head h // (Hq / Hkv)."""
  groups = q.shape[1] // k.shape[1]
  k, v = np.repeat(k, groups, axis=1), np.repeat(v, groups, axis=1)
  logits = np.einsum("nhd,mhd->hnm", q, k) / math.sqrt(q.shape[-1])
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("hnm,mhd->nhd", p, v)


def block(sd, prefix, x, angles, heads, kv_heads, text_kv=None):
  """One Qwen3 block on one sequence x [L, C]. Returns (x, (k, v) of these tokens)."""
  g = lambda name: np.asarray(sd[f"{prefix}.{name}"], np.float64)
  hd = x.shape[1] // heads
  h = rms_norm(x, g("input_layernorm.weight"))
  q = rms_norm((h @ g("attn.q_proj.weight").T).reshape(-1, heads, hd), g("attn.q_norm.weight"))
  k = rms_norm((h @ g("attn.k_proj.weight").T).reshape(-1, kv_heads, hd),
               g("attn.k_norm.weight"))
  v = (h @ g("attn.v_proj.weight").T).reshape(-1, kv_heads, hd)
  q, k = rotate(q, angles), rotate(k, angles)
  keys, values = k, v
  if text_kv is not None:
    keys, values = np.concatenate([text_kv[0], k]), np.concatenate([text_kv[1], v])
  x = x + attend(q, keys, values).reshape(len(x), -1) @ g("attn.o_proj.weight").T
  h = rms_norm(x, g("post_attention_layernorm.weight"))
  mlp = silu(h @ g("mlp.gate_proj.weight").T) * (h @ g("mlp.up_proj.weight").T)
  return x + mlp @ g("mlp.down_proj.weight").T, (k, v)


def timestep_embedding(sd, t):
  half = 128
  freqs = np.exp(-math.log(10000) * np.arange(half) / half)
  emb = np.concatenate([np.cos(t * freqs), np.sin(t * freqs)])
  w = lambda n: np.asarray(sd[f"pt_embedder.mlp.{n}"], np.float64)
  h = silu(emb @ w("0.weight").T + w("0.bias"))
  return h @ w("2.weight").T + w("2.bias")


def forward(sd, labels, scale, features, mask, h_div_w, depth, block_chunks, heads, kv_heads):
  """labels [B, T, h, w, D], scale [B], features [B, L, text_dim], mask [B, L] ->
  (logits [B, T, h, w, D, 2], per sample a list over layers of text (k, v) [len, Hkv, hd])."""
  batch, frames, h, w, dim = labels.shape
  per_chunk = depth // block_chunks
  prefixes = [f"block_chunks.{b // per_chunk}.module.{b % per_chunk}" for b in range(depth)]
  f64 = lambda name: np.asarray(sd[name], np.float64)
  hidden = f64("word_embed.bias").shape[0]
  visual_angles = rope_angles(*visual_positions(frames, h, w, h_div_w), hidden // heads)
  logits, text_kvs = [], []
  for b in range(batch):
    text = np.asarray(features[b], np.float64)[np.asarray(mask[b], bool)]
    x = text @ f64("text_proj.weight").T + f64("text_proj.bias")
    n = len(text)
    text_angles = rope_angles(np.arange(n), np.zeros(n), np.zeros(n), hidden // heads)
    kvs = []
    for p in prefixes:
      x, kv = block(sd, p, x, text_angles, heads, kv_heads)
      kvs.append(kv)
    onehot = np.zeros((frames * h * w, dim, 2))
    flat = np.asarray(labels[b]).reshape(-1, dim)
    onehot[np.arange(len(flat))[:, None], np.arange(dim)[None], flat] = 1
    x = onehot.reshape(len(flat), 2 * dim) @ f64("word_embed.weight").T + f64("word_embed.bias")
    x = np.concatenate([x, timestep_embedding(sd, float(scale[b]))[None]])
    for p, kv in zip(prefixes, kvs):
      x, _ = block(sd, p, x, visual_angles, heads, kv_heads, text_kv=kv)
    out = rms_norm(x[:-1], f64("head.norm.weight")) @ f64("head.proj.weight").T
    logits.append((out + f64("head.proj.bias")).reshape(frames, h, w, dim, 2))
    text_kvs.append(kvs)
  return np.stack(logits), text_kvs
