r"""The prompt-to-motion demo: digits sliding left, right, up or down in 9-frame clips, a causal
video tokenizer, a frozen random umT5 and a small text-to-video GRN (grn_jax/demo/t2v.py).

  python -m grn_jax.main --config=configs/demo_t2v.py --workdir=/tmp/grn_t2v_demo

Each 24x24 digit slides across a 32x32 canvas (1 pixel a frame) in `demo.captions_per_clip`
directions, captioned in five training phrasings ("a three moving to the left", ...); the
tokenizer task trains the joint (causal) video tokenizer on the clips (9 frames -> 3 latent
frames of 2x2 tokens), the T2V task of the loop the GRN (with image-to-video training: frame 0
kept with probability p_first_frame); videos come from prompts in three HELD-OUT phrasings, and
an image-to-video run animates held-out digits. `:size=test` is a seconds-long version.
"""

import ml_collections

from configs import common
from configs import demo_t2i


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  size = common.parse_arg(arg, dict(size="default"))["size"]
  if size not in ("default", "test"):
    raise ValueError(f"config argument size must be 'default' or 'test', got {size!r}.")
  test = size == "test"
  config = demo_t2i.text_demo_config("t2v", test)
  # A row packs up to 4 clips: 4 x (3 x 2 x 2 tokens + the scale token), 4 captions of <= 14.
  config.packing.update(visual_tokens=52, text_tokens=56, max_samples=4)
  # The decoder at 16 channels a level (the prompt-to-digit demo's 32): its steps cost 0.4 of
  # the wider one's, so the tokenizer trains 1000 steps in less time than 520 took.
  config.tokenizer.dec_dim = 4 if test else 16
  # A one-layer frozen random umT5 (the prompt-to-digit demo's has 2): its features keep more of
  # each word, so held-out phrasings that put the digit where no training caption does (first,
  # "7 heads left across the frame") still read (frame digit accuracy 0.83 -> 0.89, same GRN).
  config.text_encoder.num_layers = 1
  config.corruption.p_first_frame = 0.1     # image-to-video training: frame 0 kept, no loss
  # The run is num_epochs epochs of packed rows (3578 clips, 4 a row, 32 rows a step: 27 steps
  # an epoch), 918 steps; the cosine learning rate spans it.
  config.train.update(global_batch_size=8 if test else 32, total_steps=3 if test else -1,
                      num_epochs=1 if test else 34, checkpoint_every_steps=3 if test else 500)
  config.optim.warmup_steps = 1 if test else 100
  # Guidance 3 and temperature 0.3: the best of a sweep on the demo's held-out prompts (frame
  # digit accuracy 0.85; guidance 6 with temperature 0.6, the prompt-to-digit demo's best: 0.78).
  config.sample.update(num_steps=3 if test else 25, schedule_tmax=3 if test else 25,
                       cfg_scale=3.0, temperature=0.3, batch_size=8 if test else 80)
  # The video tokenizer's steps are most of the demo's time; its reconstructions of real clips
  # are read as the right digit 0.92 of the time after 700 steps, 0.97 after 1400.
  clips = 1795 if test else 2 * 1789
  config.tokenizer_train = (demo_t2i.tokenizer_train_section(3, 8, clips, num_frames=9) if test
                            else demo_t2i.tokenizer_train_section(1000, 16, clips, num_frames=9))
  config.demo = ml_collections.ConfigDict(dict(
      image_size=32,              # the canvas
      # The digits (8x8 upsampled 3x); travel 8 = 1 pixel a frame. At 16x16 (2 pixels a frame)
      # the 600-step video tokenizer's reconstructions of real clips were read as the right digit
      # 0.64 of the time (the generated videos 0.52); at 24x24, 0.91 (the videos 0.78-0.85).
      digit_size=24,
      captions_per_clip=1 if test else 2,    # directions (clips) per training digit
      per_direction=1 if test else 8,        # held-out prompts per (digit, direction)
      i2v_images=2 if test else 8,           # held-out digits animated from frame 0
      gif_frame_ms=150,
      evaluate=not test,
      sample_params="ema_0",
      # Training captions with 1-3 filler words (captions.FILLERS) with this probability, so
      # that words the model never saw in held-out prompts do not throw it off.
      filler_prob=0.8,
      # Training captions with words other than the digit and the direction dropped (each with
      # probability 1/2) with this probability (captions.drop_words), so that the digit also
      # comes first or among other neighbours (0.89 -> 0.94 with the same tokenizer).
      drop_prob=0.5,
  ))
  return config
