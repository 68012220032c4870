"""One released file -> an Orbax params directory, and a params directory -> a PyTorch file.

The command line is `python -m grn_jax.convert` (grn_jax/convert/__main__.py); the pretrained
registry (grn_jax/pretrained.py) calls `convert` too.
"""

import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

KINDS = ("c2i", "tokenizer", "t2iv", "umt5")


def _check_kind(kind: str) -> None:
  if kind not in KINDS:
    raise ValueError(f"unknown checkpoint kind {kind!r}; choose from {KINDS}.")


def convert(kind: str, src: str, dst: str, config: ml_collections.ConfigDict,
            entry: str | None = None, trust_pickle: bool = False) -> dict:
  """Reads `src`, maps it onto our params, writes `dst`; returns the numpy params.

  Args:
    kind: what the file holds (KINDS).
    src: a local .pth/.ckpt file or hf://ORG/REPO/FILE (umt5: a folder).
    dst: the new directory (umt5: dst/params and dst/tokenizer; else an Orbax params dir).
    config: a config whose model / tokenizer / text_encoder section matches the file.
    entry: the sub-dict holding the weights (default: the kind's preferred one).
    trust_pickle: allow the full unpickle the released C2I file needs.
  """
  # pylint: disable=g-import-not-at-top
  from grn_jax import checkpointing
  from grn_jax.convert import common
  # pylint: enable=g-import-not-at-top
  _check_kind(kind)
  if kind == "umt5":
    from grn_jax.convert.umt5 import convert_umt5  # pylint: disable=g-import-not-at-top
    return convert_umt5(src, dst, config.text_encoder, trust_pickle=trust_pickle, entry=entry)
  state_dict = common.load_torch_checkpoint(src, entry=entry, trust_pickle=trust_pickle,
                                            kind=kind)
  if kind == "c2i":
    from grn_jax.convert.c2i import c2i_params_from_torch  # pylint: disable=g-import-not-at-top
    params = c2i_params_from_torch(state_dict, config.model)
  elif kind == "t2iv":
    from grn_jax.convert.t2iv import t2iv_params_from_torch  # pylint: disable=g-import-not-at-top
    params = t2iv_params_from_torch(state_dict, config.model)
  else:
    from grn_jax.convert.tokenizer import tokenizer_params_from_torch  # pylint: disable=g-import-not-at-top
    params = tokenizer_params_from_torch(state_dict, config.tokenizer)
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  logging.info("converted %d tensors, %d parameters from %s", len(state_dict), count, src)
  checkpointing.save_params(os.fspath(dst), params)
  print(f"wrote {kind} params ({count:,} parameters, {len(state_dict)} tensors) to {dst}")
  return params


def torch_state_dict(kind: str, params: Any, config: ml_collections.ConfigDict
                     ) -> dict[str, np.ndarray]:
  """Our params of `kind` -> the official state dict {key: numpy array} (the inverse maps)."""
  # pylint: disable=g-import-not-at-top
  from grn_jax.convert import c2i, t2iv, tokenizer, umt5
  # pylint: enable=g-import-not-at-top
  _check_kind(kind)
  if kind == "c2i":
    return c2i.c2i_params_to_torch(params, config.model)
  if kind == "t2iv":
    return t2iv.t2iv_params_to_torch(params, config.model)
  if kind == "umt5":
    return umt5.umt5_params_to_torch(params, config.text_encoder)
  return tokenizer.tokenizer_params_to_torch(params, config.tokenizer)


def export_torch(kind: str, params_dir: str, dst: str, config: ml_collections.ConfigDict
                 ) -> dict[str, np.ndarray]:
  """Writes the params directory `params_dir` as a PyTorch file the official code loads.

  The container is the released one: C2I {'model', 'model_ema1', 'model_ema2'} (the same
  weights in each, `net.` keys, 'epoch': -1), tokenizer {'ema': ...}, T2I/T2V and umT5 flat
  state dicts. Needs torch. Returns the state dict.
  """
  # pylint: disable=g-import-not-at-top
  from grn_jax import checkpointing
  from grn_jax.convert import common
  # pylint: enable=g-import-not-at-top
  _check_kind(kind)
  if os.path.exists(dst):
    raise FileExistsError(f"{dst} already exists; choose a new file name.")
  state_dict = torch_state_dict(kind, checkpointing.restore_params(params_dir), config)
  torch = common.import_torch()
  tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()}
  if kind == "c2i":
    container = {"model": tensors, "model_ema1": tensors, "model_ema2": tensors, "epoch": -1}
  elif kind == "tokenizer":
    container = {"ema": tensors}
  else:
    container = tensors
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  torch.save(container, dst)
  print(f"wrote the {kind} params of {params_dir} ({len(tensors)} tensors) to {dst}")
  return state_dict
