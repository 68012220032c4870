"""The HBQ tokenizers (GRN-SPEC §C): the `tokenizer` section of every config, and the config of
the tokenizer task (reconstruction training, grn_jax/trainers/tokenizer.py), whose `tokenizer`
section the converter CLI and the benchmarks read.

  --config=configs/tokenizer.py:variant=image16   d=16 image tokenizer (C2I, 702.69M params)
  --config=configs/tokenizer.py:variant=video64   d=64 joint image/video tokenizer (705.69M)
  --config=configs/tokenizer.py:variant=tiny      random-weight CPU-sized one for tests

  python -m grn_jax.main --config=configs/tokenizer.py:variant=tiny --workdir=DIR  # trains
  # fine-tune a converted tokenizer on ImageNet with the pixel loss:
  python -m grn_jax.main --config=configs/tokenizer.py --workdir=DIR \
      --config.train.init_from=CONVERTED_DIR --config.data.data_dir=TFDS_DIR

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
  tiny = args["variant"] == "tiny"
  config = ml_collections.ConfigDict()
  config.task = "tokenizer"
  config.mode = "train"
  config.seed = 0
  config.tokenizer = tokenizer_config(args["variant"])

  # Images (grn_jax/data/pipeline.py): tfds, a folder, synthetic patterns, or in memory.
  config.data = ml_collections.ConfigDict(dict(
      source="synthetic" if tiny else "tfds",  # tfds | folder | synthetic | arrays
      name="imagenet2012",
      split="train",
      data_dir="",
      image_size=32 if tiny else 256,          # a multiple of 16
      random_flip=not tiny,
      num_workers=0 if tiny else 8,
      synthetic_seed=0,
      max_bad_images=100,                      # unreadable images skipped before an error
  ))
  config.train = ml_collections.ConfigDict(dict(
      global_batch_size=8 if tiny else 64,
      num_epochs=2 if tiny else 1,
      total_steps=-1,             # > 0 limits the run
      train_examples=64 if tiny else 1_281_167,  # the synthetic source's size
      ema_decays=(),              # none: the exported params are the trained ones
      log_every_steps=4 if tiny else 100,
      checkpoint_every_steps=8 if tiny else 5000,
      keep_checkpoints=3,
      async_checkpointing=True,
      init_from="",               # a converted tokenizer params dir, to fine-tune it
      sample_every_steps=0,       # > 0: write images next to their HBQ reconstructions
      eval_every_steps=0,         # the tokenizer has no training-time evaluation (must be 0)
      peak_flops_per_device=0.0,  # for MFU; 0 = measure the matmul peak at start
      resume_allow_changes="",    # fields that may differ from the checkpoint's config ('*': any)
  ))
  config.optim = ml_collections.ConfigDict(dict(
      blr=0.064 if tiny else 1e-4,  # lr = blr * global_batch / 256
      lr_scaling="linear",
      b1=0.9,
      b2=0.99,
      weight_decay=0.0,
      grad_clip_norm=1.0,
      schedule="cosine",
      warmup_epochs=0.0 if tiny else 0.05,
      warmup_steps=0,
      min_lr=0.0,
      warmup_init=0.0,
      warmup_hold_last=False,
      eps=1e-8,
  ))
  # The pixel loss through straight-through HBQ (grn_jax/trainers/tokenizer.py).
  config.reconstruction = ml_collections.ConfigDict(dict(
      hbq_rounds=4,
      l1_weight=1.0,
      l2_weight=1.0,
      quantize_prob=0.75,         # fraction of examples decoded from quantised latents
      num_frames=1,               # 1: images; 1 + 4 k: clips [N, T, S, S, 3] in memory
  ))
  config.mesh = common.mesh_config()
  config.sharding_rules = common.sharding_rules()
  return config
