"""Released PyTorch checkpoints -> grn_jax params. CLI: `python -m grn_jax.convert`."""

from grn_jax.convert.c2i import c2i_params_from_torch, c2i_params_to_torch
from grn_jax.convert.common import (CheckpointMismatchError, load_torch_checkpoint,
                                    resolve_path)
from grn_jax.convert.t2iv import t2iv_params_from_torch, t2iv_params_to_torch
from grn_jax.convert.umt5 import umt5_params_from_torch, umt5_params_to_torch

__all__ = ["CheckpointMismatchError", "c2i_params_from_torch", "c2i_params_to_torch",
           "load_torch_checkpoint", "resolve_path", "t2iv_params_from_torch",
           "t2iv_params_to_torch", "umt5_params_from_torch", "umt5_params_to_torch"]
