"""Official T2I/T2V GRN state dict (`GRN_T2I_2B.pth`, `GRN_T2V_2B.pth`; 319 tensors for GRN-2B,
GRN-PARAM-SHAPES §3) <-> our GRNT2IV params.

Blocks live under `block_chunks.{c}.module.{j}` with block index c * depth / block_chunks + j.
Linear [out, in] -> kernel [in, out] split as the module computes: q/k/v [C, heads, head_dim]
(output index head * head_dim + d), o [heads, head_dim, C], head [C, D, 2] (output index
j * 2 + k, label-major), word_embed [D * 2, C] (input index j * 2 + k).
"""

from typing import Any

import ml_collections
import numpy as np

from grn_jax import hbq
from grn_jax.convert import common
from grn_jax.convert.common import identity, linear
from grn_jax.models import grn_t2iv

_FREQUENCY_DIM = 256  # pt_embedder sinusoid width


def _block_entries(prefix: str, path: tuple[str, ...], cfg) -> list[common.Entry]:
  hidden, heads, kv_heads = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads
  head_dim = hidden // heads
  width = grn_t2iv.mlp_width(hidden, cfg.mlp_ratio)
  attn, mlp = path + ("attn",), path + ("mlp",)
  return [
      identity(f"{prefix}.input_layernorm.weight", (hidden,), path + ("input_layernorm", "weight")),
      identity(f"{prefix}.post_attention_layernorm.weight", (hidden,),
               path + ("post_attention_layernorm", "weight")),
      *linear(f"{prefix}.attn.q_proj", attn + ("q_proj",), hidden, (heads, head_dim), bias=False),
      *linear(f"{prefix}.attn.k_proj", attn + ("k_proj",), hidden, (kv_heads, head_dim),
              bias=False),
      *linear(f"{prefix}.attn.v_proj", attn + ("v_proj",), hidden, (kv_heads, head_dim),
              bias=False),
      *linear(f"{prefix}.attn.o_proj", attn + ("o_proj",), heads * head_dim, (hidden,),
              in_shape=(heads, head_dim), bias=False),
      identity(f"{prefix}.attn.q_norm.weight", (head_dim,), attn + ("q_norm", "weight")),
      identity(f"{prefix}.attn.k_norm.weight", (head_dim,), attn + ("k_norm", "weight")),
      *linear(f"{prefix}.mlp.gate_proj", mlp + ("gate_proj",), hidden, (width,), bias=False),
      *linear(f"{prefix}.mlp.up_proj", mlp + ("up_proj",), hidden, (width,), bias=False),
      *linear(f"{prefix}.mlp.down_proj", mlp + ("down_proj",), width, (hidden,), bias=False),
  ]


def block_key_prefix(block: int, cfg: ml_collections.ConfigDict) -> str:
  """Official prefix of block `block`: block_chunks.{c}.module.{j}."""
  per_chunk = cfg.depth // cfg.block_chunks
  return f"block_chunks.{block // per_chunk}.module.{block % per_chunk}"


def _key_table(cfg: ml_collections.ConfigDict) -> list[common.Entry]:
  """Every official key with its shape and our (unscanned) parameter path."""
  hidden = cfg.hidden_size
  dim = hbq.num_labels(cfg.latent_dim, cfg.hbq_rounds, "bit")
  classes = grn_t2iv.LABEL_CLASSES
  table = [
      *linear("text_proj", ("text_proj",), cfg.text_dim, (hidden,)),
      *linear("word_embed", ("word_embed",), dim * classes, (hidden,)),
      *linear("head.proj", ("head_proj",), hidden, (dim, classes)),
      identity("head.norm.weight", (hidden,), ("head_norm", "weight")),
      *linear("pt_embedder.mlp.0", ("pt_embedder", "mlp_0"), _FREQUENCY_DIM, (hidden,)),
      *linear("pt_embedder.mlp.2", ("pt_embedder", "mlp_2"), hidden, (hidden,)),
  ]
  for block in range(cfg.depth):
    table += _block_entries(block_key_prefix(block, cfg), ("blocks", f"block_{block}"), cfg)
  return table


def t2iv_params_from_torch(state_dict: dict[str, Any],
                           model_config: ml_collections.ConfigDict) -> dict:
  """Official state dict -> GRNT2IV params (numpy float32), stacked when scan_layers.

  Raises CheckpointMismatchError listing every missing, unexpected and mis-shaped key.
  """
  grn_t2iv.validate_t2iv_config(model_config)
  params = common.params_from_table(
      state_dict, _key_table(model_config),
      context=f"T2I/T2V model, depth {model_config.depth}, hidden {model_config.hidden_size}, "
              f"block_chunks {model_config.block_chunks}",
      # scan_layers is optional (grn_t2iv.SWITCH_FIELDS)
      stacks=("blocks",) if model_config.get("scan_layers", False) else ())
  return params


def t2iv_params_to_torch(params: dict,
                         model_config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """GRNT2IV params (scanned or not) -> official state dict (export, round-trip tests)."""
  return common.params_to_table(common.unboxed_numpy(params), _key_table(model_config),
                                stacks=("blocks",))
