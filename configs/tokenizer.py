"""The HBQ tokenizers alone (GRN-SPEC §C), for the converter CLI and the benchmark.

  --config=configs/tokenizer.py:variant=image16   d=16 image tokenizer (C2I, 702.69M params)
  --config=configs/tokenizer.py:variant=video64   d=64 joint image/video tokenizer (705.69M)
  --config=configs/tokenizer.py:variant=tiny      random-weight CPU-sized one for tests

Override any field: --config.tokenizer.frame_chunk=1 (stream long videos latent frame by latent
frame, exact), --config.tokenizer.tile_latent=32 (spatial tiles for very large decodes).
"""

import ml_collections

from configs import c2i

CHECKPOINTS = {
    "image16": "hf://bytedance-research/GRN/HBQ_image_tokenizer_16dim_M4.ckpt",
    "video64": "hf://bytedance-research/GRN/HBQ_tokenizer_64dim_M4.ckpt",
}


def tokenizer_config(variant: str) -> ml_collections.ConfigDict:
  """The `tokenizer` section for `variant` (image16 | video64 | tiny)."""
  if variant == "tiny":
    return c2i.tokenizer_config(tiny=True)
  if variant not in CHECKPOINTS:
    raise ValueError(f"unknown tokenizer variant {variant!r}; choose from "
                     f"{sorted(CHECKPOINTS) + ['tiny']}.")
  cfg = c2i.tokenizer_config(tiny=False)
  cfg.latent_dim = 16 if variant == "image16" else 64
  cfg.checkpoint = CHECKPOINTS[variant]
  return cfg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = c2i.parse_arg(arg)
  variant = args.pop("variant", "image16")
  if args:
    raise ValueError(f"unknown config arguments {sorted(args)}; known: variant.")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.tokenizer = tokenizer_config(variant)
  return config
