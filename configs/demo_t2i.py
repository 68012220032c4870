r"""The prompt-to-digit demo: scikit-learn's digits with captions, a frozen random umT5 and a
small text-to-image GRN (grn_jax/demo/t2i.py).

  python -m grn_jax.main --config=configs/demo_t2i.py --workdir=/tmp/grn_t2i_demo

Captions in six training phrasings ("a handwritten seven", "the digit 7", "number seven, thin
stroke", ...; grn_jax/demo/captions.py) are encoded by a tiny umT5 with frozen random weights
and a word-level tokenizer the demo writes; the T2I task of the training loop (trainers/t2iv.py,
packed rows) trains the GRN on the digits' HBQ bits, and the T2I sampler draws `demo.per_digit`
digits per digit from prompts in four HELD-OUT phrasings ("a picture of the number seven",
"hand-drawn 7", ...), scored by the digits classifier trained on real digits.
`--config=configs/demo_t2i.py:size=test` is a seconds-long version for tests.

Sections: those of configs/t2iv.py (the T2I task and sampler read them unchanged), plus
`tokenizer_train` (the tokenizer task's train, optim, reconstruction and sharding rules) and
`demo`.
"""

import ml_collections

from configs import common
from configs import t2iv
from configs import tokenizer as tokenizer_configs


def tokenizer_train_section(total_steps: int, batch: int, examples: int, num_frames: int = 1
                            ) -> ml_collections.ConfigDict:
  """The demos' tokenizer run (the tokenizer task, configs/tokenizer.py): L1 + L2 through
  straight-through HBQ, a cosine learning rate over `total_steps`."""
  task = tokenizer_configs.get_config("variant=tiny")
  del task.reconstruction.hbq_rounds   # the GRN's (config.model.hbq_rounds)
  task.reconstruction.num_frames = num_frames
  task.train.update(global_batch_size=batch, train_examples=examples, total_steps=total_steps,
                    num_epochs=-(-total_steps * batch // examples), log_every_steps=100,
                    checkpoint_every_steps=total_steps, keep_checkpoints=1,
                    async_checkpointing=False,
                    peak_flops_per_device=1e11)   # nominal: skips the matmul measurement
  task.optim.update(blr=8e-3, warmup_epochs=0.0, warmup_steps=max(1, total_steps // 5),
                    min_lr=4e-5)
  return ml_collections.ConfigDict(dict(train=task.train, optim=task.optim,
                                        reconstruction=task.reconstruction,
                                        sharding_rules=common.sharding_rules()))


def text_demo_config(task: str, test: bool) -> ml_collections.ConfigDict:
  """The sections both text demos share (configs/t2iv.py's tiny layout, demo sizes)."""
  config = t2iv.get_config(f"variant=tiny,task={task}")
  config.mode = "demo"
  latent_dim = 4 if test else 16
  config.model.update(
      name=f"GRN_{task}_digits", latent_dim=latent_dim, hbq_rounds=4, text_dim=32,
      hidden_size=64 if test else 128, depth=2 if test else 4, num_heads=4,
      num_kv_heads=2 if test else 4, block_chunks=1 if test else 2, dtype="float32",
      mlp_ratio=3.55 if test else 2.0)   # MLP width rounds to 256 (official): 256 both
  # A small tokenizer of the official architecture (as the digits demo); trained by the demo.
  config.tokenizer.update(
      dim=4 if test else 16, dec_dim=4 if test else 32, latent_dim=latent_dim,
      dim_mult=(1, 2, 2, 2), num_res_blocks=1, temporal_downsample=(False, True, True),
      checkpoint="", random_init=False)
  # The tiny umT5 (configs/umt5.py) with frozen random weights; the demo writes its tokenizer.
  config.text_encoder.update(dim=32, random_init=True, tokenizer_path="")
  config.data.update(source="arrays", num_workers=0)
  # Keep ratio U(0, 1) per example (official, no shift at this size), caption dropout 10 %.
  config.corruption.update(keep_logit_mean=0.0, keep_logit_std=0.0, keep_shift=1.0,
                           caption_drop_prob=0.1)
  config.train.update(
      ema_decays=(0.995,), log_every_steps=100, keep_checkpoints=1, async_checkpointing=False,
      peak_flops_per_device=1e11, sample_every_steps=0)
  config.optim.update(blr=1e-3, lr_scaling="none", weight_decay=0.0, grad_clip_norm=1.0,
                      schedule="cosine", warmup_epochs=0.0, warmup_init=0.0,
                      warmup_hold_last=False, min_lr=1e-5)
  config.sample.update(cfg_interval=0.0, temperature=1.0, snr_shift=1.0, negative_prompt="",
                       prompt_suffix="", seed=0, random_init=False, checkpoint="")
  return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  size = common.parse_arg(arg, dict(size="default"))["size"]
  if size not in ("default", "test"):
    raise ValueError(f"config argument size must be 'default' or 'test', got {size!r}.")
  test = size == "test"
  config = text_demo_config("t2i", test)
  # A row packs up to 4 digits: 4 x (2 x 2 tokens + the scale token), 4 captions of <= 12 tokens.
  config.packing.update(visual_tokens=20, text_tokens=48, max_samples=4)
  config.corruption.p_first_frame = 0.0
  # The run is num_epochs epochs of packed rows (5391 captions, 4 a row, 32 rows a step: 42
  # steps an epoch), 1008 steps, and the cosine learning rate spans it (total_steps would cut
  # the schedule short). Measured without filler words: 10 epochs 0.81 digit accuracy, 24
  # epochs 0.82 (guidance 6).
  config.train.update(global_batch_size=8 if test else 32, total_steps=3 if test else -1,
                      num_epochs=1 if test else 24, checkpoint_every_steps=3 if test else 500)
  config.optim.warmup_steps = 1 if test else 100
  config.sample.update(num_steps=3 if test else 25, schedule_tmax=3 if test else 25,
                       cfg_scale=6.0, batch_size=8 if test else 100)
  # Measured (300 held-out prompts, digits classifier): without filler words guidance 3 / T 1.0
  # 0.78, guidance 6 / T 0.8 0.82; training phrasings 1.00 (the gap is the unseen words);
  # filler words 0.5: T 0.8 0.86-0.91, T 0.6 0.91-0.93; filler words 0.8, T 0.6: 0.937.
  config.sample.temperature = 0.6
  config.tokenizer_train = (tokenizer_train_section(3, 8, 1797) if test else
                            tokenizer_train_section(500, 64, 1797))
  config.demo = ml_collections.ConfigDict(dict(
      image_size=32,              # 8x8 digits upsampled: a 2x2 latent grid
      captions_per_image=1 if test else 3,   # distinct training phrasings of each digit
      per_digit=2 if test else 30,           # held-out prompts sampled per digit
      grid_per_digit=2 if test else 10,      # columns of grid.png
      evaluate=not test,
      sample_params="ema_0",
      # Training captions with 1-3 filler words (captions.FILLERS) with this probability, so
      # that words the model never saw in held-out prompts do not throw it off.
      filler_prob=0.8,
  ))
  return config
