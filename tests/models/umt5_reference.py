"""numpy transcription of the umT5 encoder formulas (GRN-SPEC §G.5, §L.9), float64 except the
bucket logarithm (float32, as the official code)."""

import math

import numpy as np


def bucket(distance: int, num_buckets: int = 32, max_distance: int = 128) -> int:
  """T5 bidirectional bucket of one relative position d = key - query, one scalar at a time."""
  half = num_buckets // 2
  exact = half // 2
  offset = half if distance > 0 else 0
  d = abs(distance)
  if d < exact:
    return offset + d
  scaled = (np.float32(math.log(np.float32(d) / np.float32(exact)))
            / np.float32(math.log(max_distance / exact)) * np.float32(half - exact))
  return offset + min(exact + int(scaled), half - 1)


def gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def t5_norm(x, scale, eps=1e-6):
  return scale * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def layer(x, mask, p, num_buckets=32, max_distance=128):
  """One encoder layer. x [B, L, dim], mask [B, L] (1 valid), p: our param names (float64)."""
  length = x.shape[1]
  h = t5_norm(x, p["norm1"]["scale"])
  q = np.einsum("bld,dnh->bnlh", h, p["q"])
  k = np.einsum("bld,dnh->bnlh", h, p["k"])
  v = np.einsum("bld,dnh->bnlh", h, p["v"])
  buckets = np.array([[bucket(j - i, num_buckets, max_distance) for j in range(length)]
                      for i in range(length)])
  bias = p["pos_embedding"][buckets].transpose(2, 0, 1)            # [heads, L, L]
  logits = np.einsum("bnih,bnjh->bnij", q, k) + bias[None]           # no 1/sqrt(d)
  logits = np.where(mask[:, None, None, :] > 0, logits, -np.inf)
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  attn = np.einsum("bnij,bnjh->binh", weights, v)
  x = x + np.einsum("binh,nhd->bid", attn, p["o"])
  h = t5_norm(x, p["norm2"]["scale"])
  gated = (h @ p["fc1"]) * gelu_tanh(h @ p["gate"])
  return x + gated @ p["fc2"]


def encoder(ids, mask, params, num_layers, **kw):
  """The whole encoder on unrolled params (`layer_{i}`): float64 [B, L, dim]."""
  x = params["token_embedding"][ids]
  for i in range(num_layers):
    x = layer(x, mask, params[f"layer_{i}"], **kw)
  return t5_norm(x, params["norm"]["scale"])


def as_float64(tree):
  if isinstance(tree, dict):
    return {k: as_float64(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)
