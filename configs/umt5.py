"""The umT5 text encoder of the T2I/T2V pipeline and its prompt preprocessing (GRN-SPEC §G.5).

  --config=configs/umt5.py:variant=xxl    the released umT5-XXL encoder (5.68B params, bf16)
  --config=configs/umt5.py:variant=tiny   random-weight CPU-sized one for tests

The `text_encoder` section holds the encoder fields that `grn_jax.models.build_umt5` reads
(vocab_size ... dtype, scan_layers, remat_policy) and the prompt fields that `grn_jax.text`
and the loaders read: `checkpoint` (the converted params), `random_init` (random weights
instead, tests only),
`tokenizer_path` (a tokenizer.json / spiece.model file or a folder holding one), `max_length`
(prompts are truncated to it, EOS included) and `length_buckets` (padded lengths: a batch is
padded to the smallest bucket that holds its longest prompt, so each bucket compiles once).
The converter writes `params/` and `tokenizer/` into one directory:
  python -m grn_jax.convert --kind=umt5 --src=hf://bytedance-research/GRN/umt5-xxl \
      --dst=weights/umt5-xxl-jax --config=configs/umt5.py:variant=xxl
"""

import ml_collections

from configs import common

VARIANTS = ("xxl", "tiny")
CONVERTED_DIR = "weights/umt5-xxl-jax"
# Padded prompt lengths; the official pipeline pads every prompt to 512.
LENGTH_BUCKETS = (64, 128, 256, 512)


def text_encoder_config(variant: str) -> ml_collections.ConfigDict:
  """The `text_encoder` section for `variant` (xxl | tiny)."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown text encoder variant {variant!r}; choose from {list(VARIANTS)}.")
  if variant == "xxl":
    sizes = dict(vocab_size=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64,
                 num_layers=24)
    files = dict(checkpoint=f"{CONVERTED_DIR}/params", tokenizer_path=f"{CONVERTED_DIR}/tokenizer",
                 max_length=512, length_buckets=LENGTH_BUCKETS)
  else:
    sizes = dict(vocab_size=384, dim=32, dim_attn=48, dim_ffn=64, num_heads=4, num_layers=2)
    files = dict(checkpoint="", tokenizer_path="", max_length=64, length_buckets=(16, 32, 64))
  return ml_collections.ConfigDict(dict(
      **sizes,
      num_buckets=32,                  # relative position buckets per layer (both directions)
      max_distance=128,                # beyond it every distance shares the last bucket
      dtype="bfloat16" if variant == "xxl" else "float32",  # weights and compute
      scan_layers=False,
      remat_policy="none",
      random_init=False,               # True: random weights instead of `checkpoint` (tests)
      **files))


def sharding_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Logical axis -> mesh axis rules for the encoder, for the configs that include it: those
  of configs/common.py it uses, plus `relpos_buckets` (the position table's bucket axis)."""
  used = ("batch", "embed", "mlp", "heads", "act_heads", "act_mlp", "act_embed", "kv",
          "length", "layers", "norm", "vocab")
  rules = dict(common.sharding_rules())
  return tuple((name, rules[name]) for name in used) + (("relpos_buckets", None),)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_arg(arg, {"variant": "xxl"})["variant"]
  config = ml_collections.ConfigDict()
  config.text_encoder = text_encoder_config(variant)
  config.mesh = common.mesh_config()  # for the encoder alone (python -m grn_jax.aot)
  config.sharding_rules = sharding_rules()
  return config
