"""An independent numpy forward of the official C2I GRN, on an official-layout state dict.

Written from GRN-SPEC §D (not from our Flax code) so that tests can check the converter and the
model together without PyTorch.
"""

import numpy as np


def _rms(x, w, eps=1e-6):
  return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)


def _silu(x):
  return x / (1 + np.exp(-x))


def _lin(sd, key, x):
  return x @ sd[key + ".weight"].T + sd[key + ".bias"]


def _rope_table(hd, g, prefix):
  half = hd // 2
  freqs = 1.0 / 10000 ** (np.arange(0, half, 2) / half)
  ang = np.zeros((g, g, hd))
  for r in range(g):
    for c in range(g):
      for k, f in enumerate(freqs):
        ang[r, c, 2 * k] = ang[r, c, 2 * k + 1] = r * f
        ang[r, c, half + 2 * k] = ang[r, c, half + 2 * k + 1] = c * f
  ang = ang.reshape(g * g, hd)
  cos, sin = np.cos(ang), np.sin(ang)
  if prefix:
    cos = np.concatenate([np.ones((prefix, hd)), cos])
    sin = np.concatenate([np.zeros((prefix, hd)), sin])
  return cos, sin


def _rope(x, cos, sin):  # x [B, heads, N, hd]
  rot = np.empty_like(x)
  rot[..., 0::2] = -x[..., 1::2]
  rot[..., 1::2] = x[..., 0::2]
  return x * cos + rot * sin


def forward(sd, labels, t, y, *, classes, heads, depth, in_context_len, in_context_start):
  """labels int [B, D, h, w] (official layout) -> logits [B, K, D, h, w]."""
  sd = {k[4:] if k.startswith("net.") else k: np.asarray(v, np.float64) for k, v in sd.items()}
  b, dim, g, _ = labels.shape
  onehot = (labels[:, None] == np.arange(classes)[None, :, None, None, None])
  x = onehot.reshape(b, classes * dim, g, g).astype(np.float64)  # channel k*D + j
  x = np.einsum("bchw,oc->bhwo", x, sd["x_embedder.proj1.weight"][:, :, 0, 0])
  x = x @ sd["x_embedder.proj2.weight"][:, :, 0, 0].T + sd["x_embedder.proj2.bias"]
  x = x.reshape(b, g * g, -1) + sd["pos_embed"]
  hidden = x.shape[-1]
  half = 128
  freqs = np.exp(-np.log(10000) * np.arange(half) / half)
  temb = np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], -1)
  temb = _lin(sd, "t_embedder.mlp.2", _silu(_lin(sd, "t_embedder.mlp.0", temb)))
  yemb = sd["y_embedder.embedding_table.weight"][y]
  c = temb + yemb
  hd = hidden // heads
  for i in range(depth):
    if in_context_len and i == in_context_start:
      x = np.concatenate([yemb[:, None] + sd["in_context_posemb"], x], 1)
    cos, sin = _rope_table(hd, g, in_context_len if (in_context_len and i >= in_context_start)
                           else 0)
    p = f"blocks.{i}."
    mod = _lin(sd, p + "adaLN_modulation.1", _silu(c)).reshape(b, 6, hidden)
    h = _rms(x, sd[p + "norm1.weight"]) * (1 + mod[:, 1, None]) + mod[:, 0, None]
    n = h.shape[1]
    qkv = _lin(sd, p + "attn.qkv", h).reshape(b, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    q = _rope(_rms(qkv[0], sd[p + "attn.q_norm.weight"]), cos, sin)
    k = _rope(_rms(qkv[1], sd[p + "attn.k_norm.weight"]), cos, sin)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    o = (attn @ qkv[2]).transpose(0, 2, 1, 3).reshape(b, n, hidden)
    x = x + mod[:, 2, None] * _lin(sd, p + "attn.proj", o)
    h = _rms(x, sd[p + "norm2.weight"]) * (1 + mod[:, 4, None]) + mod[:, 3, None]
    x12 = _lin(sd, p + "mlp.w12", h)
    x1, x2 = np.split(x12, 2, -1)
    x = x + mod[:, 5, None] * _lin(sd, p + "mlp.w3", _silu(x1) * x2)
  x = x[:, in_context_len:]
  mod = _lin(sd, "final_layer.adaLN_modulation.1", _silu(c)).reshape(b, 2, hidden)
  x = _rms(x, sd["final_layer.norm_final.weight"]) * (1 + mod[:, 1, None]) + mod[:, 0, None]
  x = _lin(sd, "final_layer.linear", x)  # [B, N, K*D]
  return x.reshape(b, g, g, classes, dim).transpose(0, 3, 4, 1, 2)
