"""Finds and loads the app's model: a demo / training workdir, or a config with params dirs.

  loaded = load_workdir("/tmp/grn_demo")          # README command 1 writes it
  loaded = load_files(config, checkpoint=DIR, tokenizer=DIR)

A workdir is read with the config its training checkpoint saved (so a test-size demo, or a run
with overrides, loads as it was trained), the tokenizer of `workdir/tokenizer` and the sampling
params of `workdir/grn_params` (else the training checkpoint's `config.sample.params`). When
nothing is there, `ModelNotFoundError` says how to train the demo and where the released models
are.
"""

import dataclasses
import os
from typing import Any

import ml_collections

from grn_jax import checkpointing
from grn_jax import tokenizer_io
from grn_jax.app import families
from grn_jax.sampling import generate

DEFAULT_WORKDIR = "/tmp/grn_demo"
HOW_TO_GET_A_MODEL = (
    "Train the digits demo first (README command 1, about 11 minutes on 2 CPU cores):\n"
    "  python -m grn_jax.main --config=configs/demo.py --workdir=/tmp/grn_demo\n"
    "then run `python -m grn_jax.app` (or pass --workdir=DIR). Or use the released models: the "
    "class-to-image GRNs and the HBQ tokenizer are on the Hugging Face Hub, "
    "hf://bytedance-research/GRN (e.g. GRN_ind_B_ep599.pth, HBQ_image_tokenizer_16dim_M4.ckpt); "
    "convert them with `python -m grn_jax.convert` (README, 'Load the released checkpoints') "
    "and run\n  python -m grn_jax.app --config=configs/c2i.py:variant=B "
    "--checkpoint=$HOME/grn/GRN_B --tokenizer=$HOME/grn/HBQ16")


class ModelNotFoundError(FileNotFoundError):
  """No model where the app looked; the message says how to get one."""


@dataclasses.dataclass
class Loaded:
  """A model ready for the app: its family, params and tokenizer; `source` says from where."""
  family: families.AppFamily
  params: Any
  tok_module: Any
  tok_params: Any
  source: str


def _tuples(value):
  """JSON lists back to the tuples of the config files."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def _load(config: ml_collections.ConfigDict, workdir: str, source: str) -> Loaded:
  family = families.family_of(config)
  tokenizer_io.check_latent_dim(config)
  params = generate.load_sampling_params(config, workdir)
  family.check_params(params, what=config.sample.checkpoint or f"{workdir}/checkpoints")
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  return Loaded(family, params, tok_module, tok_params, source)


def load_workdir(workdir: str = DEFAULT_WORKDIR) -> Loaded:
  """The model a demo or training run left in workdir (see the module docstring)."""
  if not os.path.isdir(os.path.join(workdir, "checkpoints")):
    raise ModelNotFoundError(f"No model in {workdir}: it has no training checkpoint "
                             f"(checkpoints/).\n{HOW_TO_GET_A_MODEL}")
  step, saved = checkpointing.load_train_config(workdir)
  config = ml_collections.ConfigDict(_tuples(saved))
  tokenizer_dir = os.path.join(workdir, "tokenizer")
  if os.path.isdir(tokenizer_dir):
    config.tokenizer.checkpoint = tokenizer_dir
  params_dir = os.path.join(workdir, "grn_params")
  config.sample.checkpoint = params_dir if os.path.isdir(params_dir) else ""
  what = params_dir if config.sample.checkpoint else f"{config.sample.params} of step {step}"
  return _load(config, workdir, f"{workdir} ({what}, tokenizer {config.tokenizer.checkpoint})")


def load_files(config: ml_collections.ConfigDict, checkpoint: str = "",
               tokenizer: str = "") -> Loaded:
  """A config file's model with the params directories `checkpoint` and `tokenizer` (each
  overrides config.sample.checkpoint / config.tokenizer.checkpoint when given)."""
  config = ml_collections.ConfigDict(config.to_dict())
  if checkpoint:
    config.sample.checkpoint = checkpoint
  if tokenizer:
    config.tokenizer.checkpoint = tokenizer
  if not config.sample.checkpoint:
    raise ModelNotFoundError("--config needs the GRN params: pass --checkpoint=DIR (a params "
                             f"directory).\n{HOW_TO_GET_A_MODEL}")
  for path in (config.sample.checkpoint, config.tokenizer.checkpoint):
    if path and not path.startswith("gs://") and not os.path.exists(path):
      raise ModelNotFoundError(f"No params directory at {path}.\n{HOW_TO_GET_A_MODEL}")
  return _load(config, "", f"{config.sample.checkpoint} (tokenizer "
                           f"{config.tokenizer.checkpoint or 'random'})")
