"""Official C2I GRN state dict (`net.` keys, GRN-SPEC §I.1) <-> our GRNC2I params.

Each entry of `_key_table` names a PyTorch key, its PyTorch shape, our parameter path, and the
layout change (Linear [out, in] -> kernel [in, out...]; Conv2d [out, in, kh, kw] -> [kh, kw, in,
out]), keeping the official channel orders (qkv = [q|k|v] then heads, w12 = [gate|value], adaLN
chunks, final linear index k*D + j).
"""

from typing import Any

import ml_collections
import numpy as np

from grn_jax import hbq
from grn_jax.convert import common
from grn_jax.convert.common import Entry, identity, linear
from grn_jax.models import grn_c2i, layers


def _block_entries(prefix: str, path: tuple[str, ...], hidden: int, heads: int, mlp: int):
  hd = hidden // heads
  return [
      *linear(f"{prefix}.adaLN_modulation.1", path + ("adaLN_modulation",), hidden, (6, hidden)),
      identity(f"{prefix}.norm1.weight", (hidden,), path + ("norm1", "weight")),
      identity(f"{prefix}.norm2.weight", (hidden,), path + ("norm2", "weight")),
      *linear(f"{prefix}.attn.qkv", path + ("attn", "qkv"), hidden, (3, heads, hd)),
      identity(f"{prefix}.attn.q_norm.weight", (hd,), path + ("attn", "q_norm", "weight")),
      identity(f"{prefix}.attn.k_norm.weight", (hd,), path + ("attn", "k_norm", "weight")),
      *linear(f"{prefix}.attn.proj", path + ("attn", "proj"), hidden, (hidden,),
              in_shape=(heads, hd)),
      *linear(f"{prefix}.mlp.w12", path + ("mlp", "w12"), hidden, (2, mlp)),
      *linear(f"{prefix}.mlp.w3", path + ("mlp", "w3"), mlp, (hidden,)),
  ]


def _key_table(cfg: ml_collections.ConfigDict) -> list[Entry]:
  """Every official key with its shape and our (unscanned) parameter path."""
  hidden, heads, p = cfg.hidden_size, cfg.num_heads, cfg.patch_size
  classes = hbq.num_classes(cfg.hbq_rounds, cfg.label_mode)
  dim = hbq.num_labels(cfg.latent_dim, cfg.hbq_rounds, cfg.label_mode)
  in_ch, bott = classes * dim, cfg.bottleneck_dim
  tokens = (cfg.input_size // p) ** 2
  mlp = layers.swiglu_hidden(hidden, cfg.mlp_ratio)
  table = [
      *linear("t_embedder.mlp.0", ("t_embedder", "mlp_0"), 256, (hidden,)),
      *linear("t_embedder.mlp.2", ("t_embedder", "mlp_2"), hidden, (hidden,)),
      identity("y_embedder.embedding_table.weight", (cfg.num_classes + 1, hidden),
               ("y_embedder_table",)),
      Entry("x_embedder.proj1.weight", (bott, in_ch, p, p), ("x_embedder_proj1", "kernel"),
            lambda a: a.transpose(2, 3, 1, 0), lambda a: a.transpose(3, 2, 0, 1)),
      Entry("x_embedder.proj2.weight", (hidden, bott, 1, 1), ("x_embedder_proj2", "kernel"),
            lambda a: a[:, :, 0, 0].T, lambda a: a.T[:, :, None, None]),
      identity("x_embedder.proj2.bias", (hidden,), ("x_embedder_proj2", "bias")),
      identity("pos_embed", (1, tokens, hidden), ("pos_embed",)),
      *linear("final_layer.adaLN_modulation.1", ("final_adaLN_modulation",), hidden,
              (2, hidden)),
      identity("final_layer.norm_final.weight", (hidden,), ("final_norm", "weight")),
      *linear("final_layer.linear", ("final_linear",), hidden, (p, p, classes, dim)),
  ]
  start = cfg.in_context_start if cfg.in_context_len > 0 else cfg.depth
  if cfg.in_context_len > 0:
    table.append(identity("in_context_posemb", (1, cfg.in_context_len, hidden),
                          ("in_context_posemb",)))
  for i in range(cfg.depth):
    path = ("blocks_pre", f"block_{i}") if i < start else ("blocks_post", f"block_{i - start}")
    table += _block_entries(f"blocks.{i}", path, hidden, heads, mlp)
  return table


_STACKS = ("blocks_pre", "blocks_post")  # the two block stacks around the in-context tokens


def c2i_params_from_torch(state_dict: dict[str, Any],
                          model_config: ml_collections.ConfigDict) -> dict:
  """Official state dict (`net.` prefix optional) -> GRNC2I params (numpy float32).

  Raises CheckpointMismatchError listing every missing, unexpected and mis-shaped key.
  """
  grn_c2i.validate_model_config(model_config)
  params = common.params_from_table(
      common.strip_prefix(state_dict, "net."), _key_table(model_config),
      context=f"C2I {model_config.name}, label_mode={model_config.label_mode}",
      stacks=_STACKS if model_config.scan_layers else ())
  return params


def c2i_params_to_torch(params: dict, model_config: ml_collections.ConfigDict,
                        prefix: str = "net.") -> dict[str, np.ndarray]:
  """GRNC2I params -> official state dict (for exporting, and round-trip tests)."""
  return common.params_to_table(common.unboxed_numpy(params), _key_table(model_config), prefix,
                                stacks=_STACKS)
