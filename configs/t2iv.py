r"""Text-to-image / text-to-video GRN (official `GRN2b`, GRN-SPEC §G; pipeline defaults §F.2).

  --config=configs/t2iv.py:variant=2B,task=t2i    GRN-2B (2,197,832,448 params), 1024^2 images
  --config=configs/t2iv.py:variant=2B,task=t2v    the same model, 480p 2 s videos
  --config=configs/t2iv.py:variant=8B,task=t2v    our guess of the unreleased 8B (8,796,829,184)
  --config=configs/t2iv.py:variant=tiny           a CPU-sized model for tests (random weights:
                                                  GRN, tokenizer and text encoder)

Released weights (convert with `python -m grn_jax.convert --kind=t2iv`):
hf://bytedance-research/GRN/GRN_T2I_2B.pth and .../GRN_T2V_2B.pth; pass the converted params
directory as --config.sample.checkpoint=DIR. Sampling (grn_jax/sampling/t2iv_run.py):
  python -m grn_jax.main --mode=t2i --config=configs/t2iv.py:task=t2i --prompt="a cat" \
      --workdir=DIR --config.sample.checkpoint=weights/grn_t2i_2b
  python -m grn_jax.main --mode=t2v|i2v ... --prompts=FILE [--image=IMG] [--trajectory]
"""

import ml_collections

from configs import common
from configs import tokenizer as tokenizer_configs
from configs import umt5 as umt5_configs

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


def sharding_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Logical axis -> mesh axes: those of configs/common.py this family uses, plus its key/value
  heads (parameters and activations, over 'tensor') and the text-feature axis of text_proj."""
  used = ("batch", "embed", "embed_out", "mlp", "heads", "act_heads", "act_mlp", "act_embed",
          "kv", "length", "layers", "norm", "vocab", "labels", "onehot", "freq")
  rules = dict(common.sharding_rules())
  return tuple((name, rules[name]) for name in used) + (
      ("kv_heads", "tensor"), ("act_kv_heads", "tensor"), ("text_embed", None))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = common.parse_arg(arg, dict(variant="2B", task="t2i"))
  variant, task = args["variant"], args["task"]
  if task not in SAMPLE_DEFAULTS:
    raise ValueError(f"config argument task must be one of {sorted(SAMPLE_DEFAULTS)}, "
                     f"got {task!r}.")
  config = ml_collections.ConfigDict()
  config.task = task
  config.model = model_config(variant)
  tiny = variant == "tiny"
  config.tokenizer = tokenizer_configs.tokenizer_config("tiny" if tiny else "video64")
  config.tokenizer.random_init = tiny
  config.text_encoder = umt5_configs.text_encoder_config("tiny" if tiny else "xxl")
  if tiny:  # random weights and the byte vocabulary (grn_jax/text/tokenize.py)
    config.text_encoder.update(random_init=True, tokenizer_path="bytes")

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
      warmup_steps=5,
      min_steps=10,
      max_steps=50,
      entropy_k=417.7052426732362,
      entropy_b=-318.1272488653967,
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
  config.sharding_rules = sharding_rules()
  return config
