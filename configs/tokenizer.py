"""The HBQ tokenizers (GRN-SPEC §C): the `tokenizer` section of every config, and a config of
the tokenizer alone for the converter CLI and the benchmarks.

  --config=configs/tokenizer.py:variant=image16   d=16 image tokenizer (C2I, 702.69M params)
  --config=configs/tokenizer.py:variant=video64   d=64 joint image/video tokenizer (705.69M)
  --config=configs/tokenizer.py:variant=tiny      random-weight CPU-sized one for tests

Override any field: --config.tokenizer.frame_chunk=1 (stream long videos latent frame by latent
frame, exact), --config.tokenizer.tile_latent=32 (spatial tiles for very large decodes).
"""

import ml_collections

from configs import common

CHECKPOINTS = {
    "image16": "hf://bytedance-research/GRN/HBQ_image_tokenizer_16dim_M4.ckpt",
    "video64": "hf://bytedance-research/GRN/HBQ_tokenizer_64dim_M4.ckpt",
}
VARIANTS = tuple(CHECKPOINTS) + ("tiny",)


def tokenizer_config(variant: str) -> ml_collections.ConfigDict:
  """The `tokenizer` section for `variant` (image16 | video64 | tiny)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown tokenizer variant {variant!r}; choose from {sorted(VARIANTS)}.")
  if variant == "tiny":
    architecture = dict(dim=8, dec_dim=8, latent_dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1)
  else:
    architecture = dict(dim=160, dec_dim=256, latent_dim=16 if variant == "image16" else 64,
                        dim_mult=(1, 2, 4, 4), num_res_blocks=2)
  return ml_collections.ConfigDict(dict(
      **architecture,
      temporal_downsample=(False, True, True),
      dtype="float32",
      # Weights: a converted Orbax params directory (`python -m grn_jax.convert --kind=tokenizer`,
      # or the digits demo's workdir/tokenizer). The released file names it must be converted from.
      checkpoint="" if variant == "tiny" else CHECKPOINTS[variant],
      random_init=False,  # True: random weights instead of `checkpoint` (tests only, warns)
      frame_chunk=0,      # >0: videos stream this many latent frames per step (exact, less memory)
      tile_latent=0,      # >0: decode in spatial tiles of this many latent tokens (approximate)
      tile_overlap=2,     # latent tokens shared (linearly blended) by neighbouring tiles
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dict(variant="image16"))
  config = ml_collections.ConfigDict()
  config.task = "tokenizer"
  config.tokenizer = tokenizer_config(args["variant"])
  return config
