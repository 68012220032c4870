"""Class-to-image GRN on ImageNet 256 (official recipe, GRN-SPEC §D, §E.1, §F.1).

  --config=configs/c2i.py:variant=B            GRN-B (130.86M), also L, H, G
  --config=configs/c2i.py:variant=tiny         a CPU-sized model for tests
  --config=configs/c2i.py:variant=B,label_mode=bit

Any field can be overridden on the command line: --config.optim.blr=1e-4,
--config.train.global_batch_size=512.
"""

import ml_collections

from configs import common
from configs import tokenizer

# depth, hidden, heads, bottleneck, in_context_start, per-device batch of the official script.
VARIANTS = {
    "B": dict(depth=12, hidden_size=768, num_heads=12, bottleneck_dim=128, in_context_start=4),
    "L": dict(depth=24, hidden_size=1024, num_heads=16, bottleneck_dim=128, in_context_start=8),
    "H": dict(depth=32, hidden_size=1280, num_heads=16, bottleneck_dim=256, in_context_start=10),
    "G": dict(depth=40, hidden_size=1664, num_heads=16, bottleneck_dim=256, in_context_start=10),
    "tiny": dict(depth=2, hidden_size=64, num_heads=4, bottleneck_dim=16, in_context_start=1),
}


def model_config(variant: str, label_mode: str = "ind") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}.")
  tiny = variant == "tiny"
  return ml_collections.ConfigDict(dict(
      name=f"GRN_{variant}",
      mlp_ratio=4.0,
      in_context_len=4 if tiny else 32,
      input_size=4 if tiny else 16,    # latent tokens per side (256 px / 16)
      patch_size=1,
      num_classes=10 if tiny else 1000,
      latent_dim=4 if tiny else 16,
      hbq_rounds=4,
      label_mode=label_mode,
      dtype="float32",                 # compute dtype; bfloat16 on accelerators
      remat_policy="none",             # none | full | dots | dots_no_batch
      scan_layers=False,               # nn.scan over identical blocks (stacked params)
      attention_impl="auto",           # auto | xla | cudnn | splash | chunked
      **VARIANTS[variant],
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dict(variant="B", label_mode="ind"))
  variant = args["variant"]
  tiny = variant == "tiny"

  config = ml_collections.ConfigDict()
  config.task = "c2i"
  config.mode = "train"             # what `python -m grn_jax.main` runs without --mode
  config.seed = 0
  config.model = model_config(variant, args["label_mode"])
  config.tokenizer = tokenizer.tokenizer_config("tiny" if tiny else "image16")

  # Input (GRN-SPEC §E.1): ImageNet through tfds, a folder of class sub-folders, or the
  # pre-tokenized HBQ label shards written by `python -m grn_jax.data.tokenize_dataset`.
  # grain shuffles the whole index space every epoch (no shuffle buffer).
  config.data = ml_collections.ConfigDict(dict(
      source="tfds",              # tfds | folder | label_shards | synthetic | arrays
      name="imagenet2012",        # tfds name
      split="train",
      data_dir="",                # tfds data_dir, image folder, or shard glob
      image_size=256,             # = 16 * model.input_size
      random_flip=True,           # image sources (before on-the-fly tokenization)
      num_workers=8,              # grain worker processes (0 = threads in process)
      synthetic_seed=0,           # source='synthetic': fixed class templates + 25% noise
      max_bad_images=100,         # distinct unreadable images skipped before an error (-1: any)
  ))
  if tiny:
    config.data.update(source="synthetic", image_size=64, num_workers=0)

  # Training loop (official script: 8 x 128 = 1024 global batch, 600 epochs).
  config.train = ml_collections.ConfigDict(dict(
      global_batch_size=8 if tiny else 1024,
      num_epochs=600,
      total_steps=-1,             # > 0 limits the run
      train_examples=1_281_167,   # epoch size without a data set at hand (synthetic, benchmarks)
      ema_decays=(0.9999, 0.9996),
      log_every_steps=100,
      checkpoint_every_steps=5000,
      keep_checkpoints=3,
      async_checkpointing=True,
      init_from="",               # Orbax {'params': ...} dir (converter output) to start from
      sample_every_steps=0,       # > 0: write grn_jax.sampling.sample_grid_fn grids
      eval_every_steps=0,         # > 0: FID of config.eval.num_samples samples to TensorBoard
      peak_flops_per_device=0.0,  # for MFU; 0 = measure the matmul peak at start
      resume_allow_changes="",    # fields that may differ from the checkpoint's config ('*': any)
  ))
  if tiny:
    config.train.update(train_examples=256, num_epochs=8, log_every_steps=10,
                        checkpoint_every_steps=50)

  # Optimisation (official: blr 5e-5 -> lr 2e-4 at batch 1024).
  config.optim = ml_collections.ConfigDict(dict(
      blr=5e-5,                   # lr = blr * global_batch / 256
      lr_scaling="linear",
      b1=0.9,
      b2=0.95,
      weight_decay=0.0,
      grad_clip_norm=0.1,
      schedule="constant",        # constant | cosine (after warm-up)
      warmup_epochs=5,
      warmup_steps=0,             # > 0: the warm-up in steps instead of epochs
      min_lr=0.0,
      warmup_init=0.0,            # official: the warm-up starts at 0
      warmup_hold_last=False,
      eps=1e-8,
  ))
  if tiny:
    config.optim.update(warmup_epochs=1, blr=1e-3, grad_clip_norm=1.0)

  # Training corruption: keep ratio t = sigmoid(N(keep_logit_mean, keep_logit_std^2)) (official
  # P_mean, P_std), the null class with probability label_drop_prob.
  config.corruption = ml_collections.ConfigDict(dict(
      keep_logit_mean=-0.8,
      keep_logit_std=0.8,
      label_drop_prob=0.1,
  ))

  # Sampling (official eval script: tau 1.31, cfg 2.35, interval (0.44, 1.0), 50 steps).
  config.sample = ml_collections.ConfigDict(dict(
      num_steps=50,
      cfg_scale=2.35,
      cfg_interval=(0.44, 1.0),   # low < 0 selects power-cos guidance
      temperature=1.31,
      schedule="linear",          # linear | cosine | shifted
      schedule_shift=1.0,         # shift_pt factor (cosine / shifted schedules)
      keep_mode="random",         # random (official) | confidence (MaskGIT-style)
      # Entropy-guided steps (GRN-SPEC §F.4, grn_jax/sampling/refine.py): H at step
      # warmup_steps sets each row's total steps = clip(round(k H + b) + offset, min_steps,
      # max_steps), offset = warmup_steps for entropy_budget='after_warmup' (the convention of
      # the official constants, initial commit) or 0 for 'total'.
      adaptive=False,
      **common.OFFICIAL_ENTROPY_STEPS,  # warmup, min/max steps, the official k and b
      entropy_budget="after_warmup",  # after_warmup | total: what round(k H + b) counts
      params="ema_0",             # ema_0 (decay 0.9999) | ema_1 | params
      checkpoint="",              # a converted params dir; empty: the workdir's train checkpoint
      seed=0,                     # image i uses key fold_in(key(seed), i): resumable by index
      per_class=50,               # images per class (ImageNet: 50 -> 50,000)
      num_images=-1,              # > 0: only the first num_images of the class schedule
      batch_size=64,              # global batch, divisible by the mesh's batch devices
      output_dir="",              # PNGs + samples.npz; empty: <workdir>/samples
      write_npz=True,             # samples.npz: images uint8 [N, H, W, 3], labels, steps
  ))

  # Evaluation: FID during training (train.eval_every_steps > 0, grn_jax/evaluation/online.py)
  # and the tokenizer table (grn_jax/evaluation/tokenizer_metrics.py); grn_jax.evaluation.fid
  # takes flags.
  config.eval = ml_collections.ConfigDict(dict(
      inception="",               # FID Inception .npz/.pth; empty: $GRN_JAX_INCEPTION or ~/.cache
      protocol="auto",            # FID preprocessing (evaluation/fid_protocol.py): auto (the
                                  # reference's; torch_fidelity, the official one, without) |
                                  # torch_fidelity | pytorch_fid
      reference="",               # FID statistics of real images (e.g. jit_in256_stats.npz)
      feature_net="",             # empty: the FID Inception; else an .npz MLP (online.py)
      num_samples=10_000,         # samples per evaluation (FID-10k), a multiple of the classes
      batch_size=64,              # samples per program call, divisible by the batch devices
      recon_num_images=1000,      # images of the tokenizer reconstruction table
  ))

  config.mesh = common.mesh_config()
  config.sharding_rules = common.sharding_rules()
  return config
