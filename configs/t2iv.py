r"""Text-to-image / text-to-video GRN (official `GRN2b`, GRN-SPEC §G; pipeline defaults §F.2).

  --config=configs/t2iv.py:variant=2B,task=t2i    GRN-2B (2,197,832,448 params), 1024^2 images
  --config=configs/t2iv.py:variant=2B,task=t2v    the same model, 480p 2 s videos
  --config=configs/t2iv.py:variant=8B,task=t2v    our guess of the unreleased 8B (8,796,829,184)
  --config=configs/t2iv.py:variant=tiny           a CPU-sized model for tests (random weights:
                                                  GRN, tokenizer and text encoder)
  --config=configs/t2iv.py:...,shard=sequence     rows sharded over 'fsdp' along the sequence
                                                  (batch over 'data' only): fewer rows than chips

Released weights (convert with `python -m grn_jax.convert --kind=t2iv`):
hf://bytedance-research/GRN/GRN_T2I_2B.pth and .../GRN_T2V_2B.pth; pass the converted params
directory as --config.sample.checkpoint=DIR. Sampling (grn_jax/sampling/t2iv_run.py):
  python -m grn_jax.main --mode=t2i --config=configs/t2iv.py:task=t2i --prompt="a cat" \
      --workdir=DIR --config.sample.checkpoint=weights/grn_t2i_2b
  python -m grn_jax.main --mode=t2v|i2v ... --prompts=FILE [--image=IMG] [--trajectory]

Training (grn_jax/trainers/t2iv.py, the official recipe of GRN-SPEC §E.2): prepare the data once
(captioned media -> bit-label and umT5-feature shards), then fine-tune a converted checkpoint:
  python -m grn_jax.data.tokenize_captioned --config=configs/t2iv.py:task=t2i \
      --config.tokenizer.checkpoint=TOKENIZER --config.text_encoder.checkpoint=UMT5/params \
      --config.text_encoder.tokenizer_path=UMT5/tokenizer --media_dir=DIR --captions=DIR/c.jsonl \
      --out=SHARDS
  python -m grn_jax.main --config=configs/t2iv.py:task=t2i --workdir=RUN \
      --config.data.data_dir=SHARDS --config.train.init_from=GRN_T2I_2B_CONVERTED
(launch/tpu_vm.sh runs both on a TPU pod, see the README.)
"""

import math

import ml_collections

from configs import common
from configs import tokenizer as tokenizer_configs
from configs import umt5 as umt5_configs
from grn_jax import resolution

# The 8B is not released: sized after the project page and the InfinityStar family the 2B
# matches (head_dim 128, 8 KV heads, MLP 16384 = round(4096 * 4.0 / 256) * 256).
VARIANTS = {
    "2B": dict(hidden_size=2304, depth=28, num_heads=18, num_kv_heads=18, mlp_ratio=3.55,
               block_chunks=7),
    "8B": dict(hidden_size=4096, depth=36, num_heads=32, num_kv_heads=8, mlp_ratio=4.0,
               block_chunks=6),
    "tiny": dict(hidden_size=64, depth=4, num_heads=4, num_kv_heads=2, mlp_ratio=3.55,
                 block_chunks=2),
}

# Official pipeline defaults (README / t2i_infer.py, t2v_infer.py, grn_pipeline.py). The T2V
# prompt suffix and negative prompt are those of t2v_infer.py (grn_jax/text/prompts.py).
SAMPLE_DEFAULTS = {
    "t2i": dict(cfg_scale=3.0, temperature=1.1, pixels="1M", h_div_w=1.0, duration=0.0,
                prompt_suffix="", negative_prompt=""),
    "t2v": dict(cfg_scale=4.0, temperature=1.0, pixels="0.41M", h_div_w=9 / 16, duration=2.0,
                prompt_suffix=". masterpiece, high quality.", negative_prompt="t2v_infer"),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; choose from {sorted(VARIANTS)}.")
  tiny = variant == "tiny"
  return ml_collections.ConfigDict(dict(
      name=f"GRN_{variant}",
      latent_dim=4 if tiny else 64,    # = tokenizer.latent_dim (the d=64 video tokenizer)
      hbq_rounds=4,                    # bit labels per token: hbq_rounds * latent_dim
      text_dim=32 if tiny else 4096,   # umT5-XXL features
      dtype="float32",                 # compute dtype; bfloat16 on accelerators
      remat_policy="none",             # none | full | dots | dots_no_batch
      scan_layers=False,               # nn.scan over the blocks (stacked params)
      attention_impl="auto",           # auto | xla | cudnn | splash | chunked
      **VARIANTS[variant],
  ))


# Packed training rows (config.packing): visual slots V, text tokens L, examples S per row.
# 2B T2I: two 1M-bucket images (at most 4097 slots each) and their prompts (<= 512 tokens each);
# 2B T2V: one 480p 5 s clip (21 x 30 x 53 + 1 = 33391 slots) or several shorter clips. Sizes are
# multiples of 512 (the splash block).
PACKING = {
    "t2i": dict(visual_tokens=8704, text_tokens=1024, max_samples=4),
    "t2v": dict(visual_tokens=33792, text_tokens=1024, max_samples=4),
    "tiny": dict(visual_tokens=96, text_tokens=32, max_samples=4),
}
SHARDINGS = ("fsdp", "sequence")


def sharding_rules(shard: str = "fsdp") -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Logical axis -> mesh axes: those of configs/common.py this family uses, plus its key/value
  heads (parameters and activations, over 'tensor') and the text-feature axis of text_proj.

  shard='sequence' puts the packed rows' batch axis on 'data' only and their sequence ('length')
  on 'fsdp' (which still shards the parameters): for runs with fewer rows than devices.
  """
  if shard not in SHARDINGS:
    raise ValueError(f"config argument shard must be one of {SHARDINGS}, got {shard!r}.")
  used = ("batch", "embed", "embed_out", "mlp", "heads", "act_heads", "act_mlp", "act_embed",
          "kv", "length", "layers", "norm", "vocab", "labels", "onehot", "freq")
  rules = dict(common.sharding_rules())
  if shard == "sequence":
    rules.update(batch="data", length="fsdp")
  return tuple((name, rules[name]) for name in used) + (
      ("kv_heads", "tensor"), ("act_kv_heads", "tensor"), ("text_embed", None))


def keep_shift(pixels: str, h_div_w: float) -> float:
  """The official recommendation for the keep-ratio shift: sqrt(H * W) / 256 of the training
  resolution (`shift_pt`'s docstring), 4 at 1024^2, 2.49 at 480 x 848."""
  height, width = resolution.image_size(h_div_w, pixels)
  return round(math.sqrt(height * width) / 256, 2)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dict(variant="2B", task="t2i", shard="fsdp"))
  variant, task = args["variant"], args["task"]
  if task not in SAMPLE_DEFAULTS:
    raise ValueError(f"config argument task must be one of {sorted(SAMPLE_DEFAULTS)}, "
                     f"got {task!r}.")
  tiny = variant == "tiny"
  config = ml_collections.ConfigDict()
  config.task = task
  config.mode = "train"
  config.seed = 0
  config.model = model_config(variant)
  config.tokenizer = tokenizer_configs.tokenizer_config("tiny" if tiny else "video64")
  config.tokenizer.random_init = tiny
  config.text_encoder = umt5_configs.text_encoder_config("tiny" if tiny else "xxl")
  if tiny:  # random weights and the byte vocabulary (grn_jax/text/tokenize.py)
    config.text_encoder.update(random_init=True, tokenizer_path="bytes",
                               dim=config.model.text_dim)

  # Captioned images / videos: prepared once into shards by grn_jax.data.tokenize_captioned
  # (bit labels and umT5 features; source 'shards'), or in memory (source 'arrays'). The
  # bucket fields are read by the preparation: each media item is resized and cropped to the
  # aspect template nearest its shape at the `pixels` bucket (official dynamic resolution) and
  # a video is cut to a duration that is a multiple of duration_step within [min_duration,
  # max_duration] seconds, resampled to video_fps.
  config.data = ml_collections.ConfigDict(dict(
      source="shards",            # shards | arrays
      data_dir="",                # the prepared shards
      pixels="0.06M" if tiny else SAMPLE_DEFAULTS[task]["pixels"],
      video_fps=resolution.VIDEO_FPS,
      duration_step=0.25,         # official duration_resolution
      min_duration=0.0,
      max_duration=0.0 if task == "t2i" else 5.0,  # 81 frames at 16 fps
      num_workers=0 if tiny else 8,
  ))
  config.packing = ml_collections.ConfigDict(PACKING["tiny" if tiny else task])

  # Official recipe: per-example keep ratio pt = U(0, 1) (keep_logit_std <= 0) or
  # sigmoid(N(keep_logit_mean, keep_logit_std^2)), then shift_pt with alpha = keep_shift; a
  # Bernoulli(pt) keep per bit, uniform random bits elsewhere; pt itself in the scale token.
  config.corruption = ml_collections.ConfigDict(dict(
      keep_logit_mean=0.0,
      keep_logit_std=0.0,
      keep_shift=1.0 if tiny else keep_shift(SAMPLE_DEFAULTS[task]["pixels"],
                                             SAMPLE_DEFAULTS[task]["h_div_w"]),
      caption_drop_prob=0.1,      # caption -> the empty prompt (official drop_condition_prob)
      short_caption_prob=0.2,     # caption -> its short variant, where the data has one
                                  # (official short_cap_prob; grn_jax/data/captioned_media.py)
      p_first_frame=0.0 if task == "t2i" else 0.1,  # image-to-video: frame 0 kept, no loss
  ))
  config.train = ml_collections.ConfigDict(dict(
      global_batch_size=8 if tiny else 64,   # packed rows per step
      num_epochs=1,
      total_steps=-1,             # > 0 limits the run
      train_examples=64 if tiny else 100_000,  # packed rows per epoch without data (AOT)
      ema_decays=(0.9999,),
      log_every_steps=2 if tiny else 100,
      checkpoint_every_steps=4 if tiny else 1000,
      keep_checkpoints=3,
      async_checkpointing=True,
      init_from="",               # a converted checkpoint (python -m grn_jax.convert --kind=t2iv)
      sample_every_steps=0,       # must be 0: no training-time sampling or FID for T2I/T2V yet
      eval_every_steps=0,
      resume_allow_changes="",    # fields that may differ from the checkpoint's config ('*': any)
      peak_flops_per_device=0.0,  # for MFU; 0 = measure the matmul peak at start
  ))
  # Official: AdamW(0.9, 0.999), lr 2e-5 whatever the batch, weight decay 0.005 except 1-D
  # tensors and biases, linear warm-up over 100 iterations from 0.005 x lr, then constant at the
  # last warm-up rate (the official loop sets the rate only while warming up: 0.99005 x lr);
  # clipping 2.0.
  config.optim = ml_collections.ConfigDict(dict(
      blr=2e-5,
      lr_scaling="none",
      b1=0.9,
      b2=0.999,
      weight_decay=0.005,
      grad_clip_norm=2.0,
      schedule="constant",
      warmup_epochs=0.0,
      warmup_steps=2 if tiny else 100,
      warmup_init=0.005,          # official wp0
      warmup_hold_last=True,
      min_lr=0.0,
      eps=1e-8,
  ))

  # Sampling (official pipeline): 50 steps, cosine keep-ratio schedule with Tmax 50 and no
  # shift, guidance at every step (cfg_interval 0.0).
  config.sample = ml_collections.ConfigDict(dict(
      num_steps=50,
      schedule_tmax=50,           # official complexity_aware_Tmax
      snr_shift=1.0,
      cfg_interval=0.0,           # guidance when the keep ratio >= this
      **SAMPLE_DEFAULTS[task],    # pixels: bucket of grn_jax.resolution.PIXEL_BUCKETS;
                                  # h_div_w: height / width; duration: seconds (0 = image);
                                  # negative_prompt 't2v_infer': the official T2V one
      # Entropy-guided steps (the initial official commit's rule; sampling/t2iv.py).
      adaptive=False,
      **common.OFFICIAL_ENTROPY_STEPS,  # warmup, min/max steps, the official k and b
      # What to generate (--prompt / --prompts / --image / --trajectory of grn_jax.main).
      prompt="",
      prompts="",                 # a UTF-8 text file, one prompt per line ('#' comments)
      image="",                   # i2v: the first frame (resized and centre-cropped)
      trajectory=False,           # also write each output's refinement animation
      seed=0,                     # output i uses fold_in(key(seed), i)
      batch_size=1,
      fps=16,
      checkpoint="",              # the converted GRN params directory
      random_init=tiny,           # random GRN weights instead (tests only; warns)
      output_dir="",              # default: WORKDIR/<mode>
  ))

  config.mesh = common.mesh_config()
  if not tiny:  # FSDP over every chip (18 heads: tensor 2 or 3 at most)
    config.mesh.update(data=1, fsdp=-1)
  config.sharding_rules = sharding_rules(args["shard"])
  return config
