"""Official HBQ tokenizer state dict (196 tensors, GRN-PARAM-SHAPES §1) <-> our params.

Layouts: Conv3d [out, in, kt, kh, kw] -> [kt, kh, kw, in, out]; Conv2d [out, in, kh, kw] ->
[kh, kw, in, out]; RMS_norm gamma [C, 1, 1(, 1)] -> [C].
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax.convert import common
from grn_jax.models import tokenizer as tok_lib

_CONV3D = ((4, 3, 0, 1, 2), (2, 3, 4, 1, 0))   # (to torch, to flax) transposes
_CONV2D = ((3, 2, 0, 1), (2, 3, 1, 0))


def _torch_name(path: tuple[str, ...], nrb: int) -> str:
  """Our parameter path (without the leaf) -> the official module prefix."""
  top, name = path[0], path[1]
  rest = path[2:]
  if top == "encoder" and name == "conv1_out":
    return "conv1"
  if top == "decoder" and name == "conv2_in":
    return "conv2"
  prefix = top
  if name in ("conv1",):
    return f"{prefix}.conv1"
  if name in ("head_norm",):
    return f"{prefix}.head.0"
  if name in ("head_conv",):
    return f"{prefix}.head.2"
  if name.startswith("middle_"):
    index = {"middle_0": 0, "middle_attn": 1, "middle_2": 2}[name]
    return _block_prefix(f"{prefix}.middle.{index}", rest)
  kind, stage, what = name.split("_", 2)  # down_{i}_res_{j} / down_{i}_resample / ..._time_conv
  container = "downsamples" if kind == "down" else "upsamples"
  base = f"{prefix}.{container}.{stage}.{container}"
  last = nrb if kind == "down" else nrb + 1
  if what.startswith("res_"):
    return _block_prefix(f"{base}.{what[4:]}", rest)
  if what == "resample":
    return f"{base}.{last}.resample.1"
  if what == "time_conv":
    return f"{base}.{last}.time_conv"
  raise KeyError(f"unmapped tokenizer parameter {path}")


_BLOCK_PARTS = {"norm1": "residual.0", "conv1": "residual.2", "norm2": "residual.3",
                "conv2": "residual.6", "shortcut": "shortcut", "norm": "norm",
                "to_qkv": "to_qkv", "proj": "proj"}


def _block_prefix(prefix: str, rest: tuple[str, ...]) -> str:
  return f"{prefix}.{_BLOCK_PARTS[rest[0]]}" if rest else prefix


def _entries(cfg: ml_collections.ConfigDict):
  """(our path, torch key, torch shape, to_flax, to_torch) for every parameter."""
  module = tok_lib.build_tokenizer(cfg)
  shapes = jax.eval_shape(module.init, jax.random.key(0),
                          jnp.zeros((1, 5, 32, 32, 3), jnp.float32))["params"]
  nrb = int(cfg.num_res_blocks)
  out = []
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    path = tuple(k.key for k in key_path)
    prefix = _torch_name(path[:-1], nrb)
    shape = tuple(leaf.shape)
    if path[-1] == "gamma":
      attn_norm = len(path) >= 3 and path[-2] == "norm"
      tshape = (shape[0], 1, 1) if attn_norm else (shape[0], 1, 1, 1)
      out.append((path, f"{prefix}.gamma", tshape, lambda a: a.reshape(-1),
                  lambda a, s=tshape: a.reshape(s)))
    elif path[-1] == "bias":
      out.append((path, f"{prefix}.bias", shape, lambda a: a, lambda a: a))
    elif len(shape) == 5:
      tshape = tuple(shape[i] for i in _CONV3D[0])
      out.append((path, f"{prefix}.weight", tshape, lambda a: a.transpose(_CONV3D[1]),
                  lambda a: a.transpose(_CONV3D[0])))
    else:
      tshape = tuple(shape[i] for i in _CONV2D[0])
      out.append((path, f"{prefix}.weight", tshape, lambda a: a.transpose(_CONV2D[1]),
                  lambda a: a.transpose(_CONV2D[0])))
  return out


def tokenizer_params_from_torch(state_dict: dict[str, Any],
                                tokenizer_config: ml_collections.ConfigDict) -> dict:
  """Official tokenizer state dict (`ema` or `vae` entry) -> our params (numpy float32).

  Raises CheckpointMismatchError listing every missing, unexpected and mis-shaped key.
  """
  mapper = common.KeyMapper(dict(state_dict), context=f"HBQ tokenizer, latent_dim="
                                                      f"{tokenizer_config.latent_dim}")
  params: dict = {}
  for path, key, tshape, to_flax, _ in _entries(tokenizer_config):
    value = mapper.take(key, tshape, to_flax)
    if value is not None:
      common.set_in(params, path, np.ascontiguousarray(value, np.float32))
  mapper.finish()
  return params


def tokenizer_params_to_torch(params: dict, tokenizer_config: ml_collections.ConfigDict
                              ) -> dict[str, np.ndarray]:
  """Our params -> the official state dict layout."""
  out = {}
  for path, key, _, _, to_torch in _entries(tokenizer_config):
    node = params
    for name in path:
      node = node[name]
    out[key] = np.ascontiguousarray(to_torch(np.asarray(node, np.float32)))
  return out
