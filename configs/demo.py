r"""The embedded demo: handwritten digits (scikit-learn), a tiny HBQ tokenizer and a small GRN.

  python -m grn_jax.main --config=configs/demo.py --workdir=/tmp/grn_demo

Trains the tokenizer on the 1,797 8x8 digits upsampled to 32x32 (latent grid 2x2), tokenizes
them into HBQ labels, trains a class-conditional GRN on the labels with the C2I trainer and
samples a class grid, a refinement animation and `samples.npz` (about 8 minutes of CPU time,
10-11 minutes on 2 CPU cores). `--config=configs/demo.py:size=test` is a seconds-long version
for tests.

The sections are those of configs/c2i.py (task, model, tokenizer, data, train, optim,
corruption, sample, eval, mesh, sharding_rules), so the C2I task and the sampler read this
config unchanged; `tokenizer_train` (the train, optim and reconstruction sections of the
tokenizer task, configs/tokenizer.py) and `demo` are demo-only.
"""

import ml_collections

from configs import c2i
from configs import common
from configs import tokenizer as tokenizer_configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  size = common.parse_arg(arg, dict(size="default"))["size"]
  if size not in ("default", "test"):
    raise ValueError(f"config argument size must be 'default' or 'test', got {size!r}.")
  test = size == "test"

  # Start from the tiny C2I config so that every field the trainer and sampler know is there.
  config = c2i.get_config("variant=tiny")
  config.mode = "demo"

  image_size = 32                 # 8x8 digits upsampled; the tokenizer stride 16 gives 2x2
  latent_dim = 16
  config.model.update(
      name="GRN_digits",
      depth=4, hidden_size=128, num_heads=4, bottleneck_dim=64, mlp_ratio=4.0,
      in_context_len=4, in_context_start=1,
      input_size=image_size // 16, patch_size=1, num_classes=10,
      latent_dim=latent_dim, hbq_rounds=4, label_mode="ind", dtype="float32")

  # A small tokenizer of the official architecture (Wan-2.2-VAE-style encoder/decoder).
  config.tokenizer.update(
      dim=16, dec_dim=32, latent_dim=latent_dim, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
      temporal_downsample=(False, True, True), dtype="float32",
      checkpoint="")              # empty: the demo trains it and writes workdir/tokenizer

  # Tokenizer training (the tokenizer task, grn_jax/trainers/tokenizer.py, on the digits in
  # memory with this config's seed, tokenizer, data, mesh and model.hbq_rounds): L1 + L2
  # reconstruction where the decoder sees HBQ-quantised latents (straight-through) with
  # probability quantize_prob.
  tokenizer_task = tokenizer_configs.get_config("variant=tiny")
  del tokenizer_task.reconstruction.hbq_rounds   # the GRN's (config.model.hbq_rounds)
  config.tokenizer_train = ml_collections.ConfigDict(dict(
      train=tokenizer_task.train, optim=tokenizer_task.optim,
      reconstruction=tokenizer_task.reconstruction))
  config.tokenizer_train.train.update(
      global_batch_size=64,
      train_examples=1797,
      num_epochs=18,              # 28 steps per epoch: the schedule's length (504 steps)
      total_steps=500,
      log_every_steps=100,
      checkpoint_every_steps=500,
      keep_checkpoints=1,
      async_checkpointing=False,
      peak_flops_per_device=1e11)  # nominal: skips the start-up matmul measurement
  config.tokenizer_train.optim.update(
      blr=8e-3,                   # lr = 8e-3 * 64 / 256 = 2e-3
      warmup_epochs=4,            # 112 steps
      min_lr=4e-5)                # the cosine ends at lr / 50

  # The digits live in memory as pre-tokenized HBQ labels (source='arrays').
  config.data.update(
      source="arrays", name="sklearn_digits", split="train", image_size=image_size,
      random_flip=False, num_workers=0)

  # 215 epochs of 14 batches = 3010 steps, and the cosine learning rate ends with the run (the
  # earlier num_epochs=300 with total_steps=2000 stopped it at 55% of its peak). Sample
  # diversity grows with training length (2000 / 3000 / 4000 steps: within-class diversity
  # 1.70 / 1.71 / 1.75 at 40 sampling steps, real digits 1.84, grn_jax/demo/evaluate.py);
  # 3000 keeps the whole demo well inside 15 minutes on 2 CPU cores.
  # Short run: an EMA of decay d averages about 1 / (1 - d) steps and still holds d^T of the
  # random init after T steps (0.999 after 2000 steps: 13.5%, and samples of half the data's
  # diversity); 0.995 after 3000 steps holds 3e-7.
  config.train.update(
      global_batch_size=128,
      train_examples=1797,
      num_epochs=215,
      total_steps=-1,
      ema_decays=(0.995, 0.99),
      log_every_steps=500,
      checkpoint_every_steps=2000,
      keep_checkpoints=1,
      peak_flops_per_device=1e11,  # nominal: skips the start-up matmul measurement
      async_checkpointing=False,
      sample_every_steps=0,
      # The digits classifier's Frechet distance of eval.num_samples samples during training
      # (grn_jax/evaluation/online.py; the demo writes the feature network and the reference
      # statistics into workdir/eval/ and sets eval.feature_net / eval.reference).
      eval_every_steps=500)
  config.eval.update(num_samples=200, batch_size=200)
  config.corruption.update(keep_logit_mean=-0.8, keep_logit_std=0.8, label_drop_prob=0.1)
  config.optim.update(blr=2e-3, warmup_epochs=5, grad_clip_norm=1.0, schedule="cosine",
                      min_lr=1e-5)   # peak lr = blr * 128 / 256 = 1e-3

  # Default sampler settings of the demo (the grid, samples.npz and the evaluation use them).
  # Guidance off (cfg_scale=1): the model alone is >= 98% recognisable, and guidance only
  # trades diversity for accuracy. Diversity grows with the number of steps (25 / 32 / 40:
  # 1.67 / 1.70 / 1.71), the Frechet distance stays about the real-digit floor.
  config.sample.update(
      num_steps=40,
      cfg_scale=1.0,
      cfg_interval=(0.1, 1.0),
      temperature=1.0,
      schedule="linear",
      params="ema_0",
      per_class=50,
      batch_size=250,
      # Adaptive steps: a row's total = clip(round(k H + b), min_steps, max_steps) with H its
      # normalised entropy after a 4-step warm-up on the 40-step grid. H of this model spans
      # about 0.60-0.71 (10%-90%); k, b map that range linearly onto 20-40 steps (mean ~31).
      warmup_steps=4,
      min_steps=20,
      max_steps=40,
      entropy_k=182.0,
      entropy_b=-89.0,
      entropy_budget="total",
  )

  # Demo-only settings: what to write and how to compare fixed and adaptive step counts.
  config.demo = ml_collections.ConfigDict(dict(
      grid_per_class=10,          # columns of grid.png (rows = the 10 classes)
      animation_classes=(0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
      gif_frame_ms=120,
      compare_adaptive=True,      # also sample with entropy-adaptive steps and evaluate both
      evaluate=True,              # accuracy, Frechet distance, diversity (digits classifier)
  ))

  if test:
    config.tokenizer.update(dim=4, dec_dim=4, latent_dim=4)
    config.model.update(depth=2, hidden_size=32, num_heads=2, bottleneck_dim=8,
                        in_context_len=2, latent_dim=4)
    config.tokenizer_train.train.update(global_batch_size=8, total_steps=3, log_every_steps=1,
                                        checkpoint_every_steps=3)
    config.tokenizer_train.optim.warmup_epochs = 0
    config.train.update(global_batch_size=16, total_steps=3, log_every_steps=1,
                        checkpoint_every_steps=3, eval_every_steps=3)
    config.eval.update(num_samples=20, batch_size=20)
    config.sample.update(num_steps=3, per_class=2, batch_size=20, warmup_steps=1, min_steps=2,
                         max_steps=4)
    config.demo.update(grid_per_class=2, animation_classes=(0, 1), evaluate=False)
  return config
