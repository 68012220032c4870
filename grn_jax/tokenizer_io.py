"""The tokenizer I/O: load the HBQ tokenizer, images <-> HBQ labels, and the one pixel rule.

  module, params = load_tokenizer(config.tokenizer, seed=config.seed)
  encode = make_encode_fn(module, hbq_rounds, label_mode)  # jit: images -> labels int32
  decode = make_decode_fn(module, hbq_rounds, label_mode)  # jit: labels -> images in [-1, 1]
  labels = batched(encode, params, images, batch_size=256)   # fixed-shape batches, one compile

Weights: `tokenizer.checkpoint` is an Orbax params directory, written by `python -m
grn_jax.convert --kind=tokenizer` from a released PyTorch file, or by the digits demo
(workdir/tokenizer). `tokenizer.random_init=True` draws random weights instead (tests only; a
warning says so). A PyTorch file or hf:// path fails with the command that converts it.

Pixels: images are float in [-1, 1] or uint8 in [0, 255], channels last. The one rule between
the two, used by the sampler, the evaluation, the demo and the data paths:
  to_uint8(x)   = round_half_even(clip((x + 1) / 2 * 255, 0, 255))   (the official C2I
                  evaluation: np.round(np.clip(x * 255, 0, 255)) of x = (image + 1) / 2)
  from_uint8(u) = u / 127.5 - 1
to_uint8(from_uint8(u)) == u for every uint8 u.

Images [B, H, W, 3] and videos [B, T, H, W, 3] both go through; latents are at 1/16 of the
resolution (and 1/4 of the frames after the first), see grn_jax/models/tokenizer.py.
"""

import dataclasses
from typing import Any, Callable

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import checkpointing
from grn_jax import hbq
from grn_jax import models
from grn_jax import random_init

PYTORCH_SUFFIXES = (".ckpt", ".pth", ".pt")
# Spatial size of the dummy image a random init traces (params do not depend on it).
_INIT_IMAGE_SIZE = 16


def to_uint8(images) -> jax.Array:
  """float [..., C] in [-1, 1] -> uint8 [..., C]: round_half_even(clip((x + 1) / 2 * 255))."""
  pixels = (jnp.asarray(images, jnp.float32) + 1.0) / 2.0 * 255.0
  return jnp.round(jnp.clip(pixels, 0.0, 255.0)).astype(jnp.uint8)


def from_uint8(pixels) -> jax.Array:
  """uint8 [..., C] in [0, 255] -> float32 [..., C] in [-1, 1]: u / 127.5 - 1."""
  return jnp.asarray(pixels, jnp.float32) / 127.5 - 1.0


def _check_params_dir(path: str) -> None:
  if path.startswith("hf://") or path.endswith(PYTORCH_SUFFIXES):
    raise ValueError(
        f"config.tokenizer.checkpoint={path!r} is a PyTorch file; convert it first into a "
        "converted params directory with `python -m grn_jax.convert --kind=tokenizer "
        f"--src={path} --dst=DIR --config=...` and pass --config.tokenizer.checkpoint=DIR, or "
        "let the pretrained registry do it once (`--pretrained=NAME` on grn_jax.main, "
        "grn_jax.pretrained.load(NAME); names: python -m grn_jax.pretrained --list).")
  if not path:
    raise ValueError(
        "config.tokenizer.checkpoint is empty: set it to a converted params directory (written "
        "by `python -m grn_jax.convert --kind=tokenizer` or by the digits demo), or set "
        "config.tokenizer.random_init=True for a test run.")


def check_latent_dim(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError unless the tokenizer's latent is the model's (config.*.latent_dim)."""
  if config.tokenizer.latent_dim != config.model.latent_dim:
    raise ValueError(f"config.tokenizer.latent_dim={config.tokenizer.latent_dim} != "
                     f"config.model.latent_dim={config.model.latent_dim}.")


@random_init.program
def _init_params(module: nn.Module, key: jax.Array) -> Any:
  images = jnp.zeros((1, _INIT_IMAGE_SIZE, _INIT_IMAGE_SIZE, 3), jnp.float32)
  return module.init(key, images)["params"]


def abstract_params(module: nn.Module) -> Any:
  """The params of `module` as jax.ShapeDtypeStructs, the tree load_tokenizer returns (AOT);
  creates no array."""
  return _init_params.shape(module)


def random_params(module: nn.Module, seed: int) -> Any:
  """Random encoder and decoder params of `module` from key(seed) (compiled once per module)."""
  return _init_params(module, jax.random.key(seed))


def load_tokenizer(tokenizer_cfg: ml_collections.ConfigDict, seed: int = 0
                   ) -> tuple[nn.Module, Any]:
  """The tokenizer module of `config.tokenizer` and its params.

  Args:
    tokenizer_cfg: the `tokenizer` section (grn_jax.models.build_tokenizer checks it).
    seed: the key of a random init (only with tokenizer_cfg.random_init).

  Returns:
    (module, params): params from the Orbax directory tokenizer_cfg.checkpoint as numpy arrays,
    or random ones when tokenizer_cfg.random_init is True.

  Raises:
    ValueError: the checkpoint is empty (and random_init is False), or a PyTorch file / hf://
      path that must be converted first.
    FileNotFoundError: no params directory at the path.
  """
  module = models.build_tokenizer(tokenizer_cfg)
  if tokenizer_cfg.random_init:
    logging.warning("config.tokenizer.random_init=True: a RANDOM tokenizer (tests only); "
                    "config.tokenizer.checkpoint=%r is ignored.", tokenizer_cfg.checkpoint)
    return module, random_params(module, seed)
  _check_params_dir(tokenizer_cfg.checkpoint)
  params = checkpointing.restore_params(tokenizer_cfg.checkpoint)
  check_params(module, params, f"config.tokenizer.checkpoint={tokenizer_cfg.checkpoint!r}")
  return module, params


def check_params(module: nn.Module, params: Any, what: str) -> None:
  """Raises ValueError unless params (the encoder's, the decoder's or both) fit the module:
  e.g. a tokenizer of another latent width than config.tokenizer.latent_dim."""
  images = jax.ShapeDtypeStruct((1, _INIT_IMAGE_SIZE, _INIT_IMAGE_SIZE, 3), jnp.float32)
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), images)["params"])
  unknown = sorted(set(params) - set(abstract))
  if unknown or not params:
    raise ValueError(f"{what}: params hold {sorted(params)}, a tokenizer has {sorted(abstract)}.")
  for part in params:
    try:
      checkpointing.check_tree_matches(params[part], abstract[part], what=f"{what} ({part})")
    except ValueError as e:
      raise ValueError(f"{e} Check config.tokenizer (latent_dim, dim, dec_dim, dim_mult) "
                       "against the converted file.") from e


def check_pixels(images) -> None:
  """Raises ValueError for float images outside [-1, 1] or not finite (e.g. [0, 255] floats,
  NaN) and TypeError for integer images other than uint8. Traced arrays (inside jit) are
  checked for their dtype only."""
  dtype = images.dtype
  if jnp.issubdtype(dtype, jnp.integer) and dtype != jnp.uint8:
    raise TypeError(f"images must be uint8 in [0, 255] or float in [-1, 1], got {dtype}.")
  if dtype == jnp.uint8 or isinstance(images, jax.core.Tracer):
    return
  values = np.asarray(images)
  if not np.isfinite(values).all():
    raise ValueError(f"images hold {int((~np.isfinite(values)).sum())} NaN/inf values.")
  low, high = float(values.min()), float(values.max())
  if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
    hint = " (they look like [0, 255] pixels: pass uint8, or x / 127.5 - 1)" if high > 2 else ""
    raise ValueError(f"float images must lie in [-1, 1], got [{low:g}, {high:g}]{hint}.")


def encode_latents(module: nn.Module, params: Any, images: jax.Array) -> jax.Array:
  """Images uint8 or float in [-1, 1], [B, (T,) H, W, 3] -> tanh latents [B, (T',) h, w, d].

  Concrete images are checked first (check_pixels)."""
  check_pixels(images)
  x = from_uint8(images) if images.dtype == jnp.uint8 else images.astype(jnp.float32)
  return module.apply({"params": params}, x, method="encode")


def decode_latents(module: nn.Module, params: Any, latents: jax.Array) -> jax.Array:
  """Latents [B, (T,) h, w, d] -> images float32 [B, (T',) H, W, 3], clipped to [-1, 1]."""
  images = module.apply({"params": params}, latents, method="decode")
  return jnp.clip(images.astype(jnp.float32), -1.0, 1.0)


def encode_labels(module: nn.Module, params: Any, images: jax.Array, hbq_rounds: int,
                  label_mode: str) -> jax.Array:
  """Images (as encode_latents) -> HBQ labels int32 [B, (T',) h, w, D] (hbq.quantize)."""
  return hbq.quantize(encode_latents(module, params, images), hbq_rounds, label_mode)


def decode_labels(module: nn.Module, params: Any, labels: jax.Array, hbq_rounds: int,
                  label_mode: str) -> jax.Array:
  """HBQ labels int [B, (T,) h, w, D] -> images float32 in [-1, 1] (as decode_latents)."""
  return decode_latents(module, params, hbq.dequantize(labels, hbq_rounds, label_mode))


def make_encode_fn(module: nn.Module, hbq_rounds: int, label_mode: str) -> Callable:
  """jit((params, images uint8 or float in [-1, 1]) -> HBQ labels int32); the images are
  checked (check_pixels) before the jitted call."""
  encode = jax.jit(lambda params, images: encode_labels(module, params, images, hbq_rounds,
                                                        label_mode))

  def checked(params, images):
    check_pixels(images)
    return encode(params, images)

  return checked


def make_decode_fn(module: nn.Module, hbq_rounds: int, label_mode: str) -> Callable:
  """jit((params, HBQ labels int) -> images float32 in [-1, 1])."""
  return jax.jit(lambda params, labels: decode_labels(module, params, labels, hbq_rounds,
                                                      label_mode))


@dataclasses.dataclass(frozen=True)
class TokenizerDecode:
  """Hashable `decode_fn(params, latents) -> images float32 in [-1, 1]` (for the sampler)."""
  module: Any

  def __call__(self, params, latents):
    return decode_latents(self.module, params, latents)


@dataclasses.dataclass(frozen=True)
class Uint8Decode:
  """Hashable decode_fn wrapper: `inner`'s images in [-1, 1] -> uint8 (to_uint8)."""
  inner: Any

  def __call__(self, params, latents):
    return to_uint8(self.inner(params, latents))


def batched(fn: Callable, params: Any, array: np.ndarray, batch_size: int) -> np.ndarray:
  """fn(params, batch) over `array` in batches of batch_size (the last one padded, then cut).

  Every call sees the same batch shape, so a jitted fn compiles once.
  """
  n = len(array)
  if n == 0:
    raise ValueError("batched() needs a non-empty array.")
  pad = (-n) % batch_size
  padded = np.concatenate([array, np.repeat(array[-1:], pad, axis=0)]) if pad else array
  out = [np.asarray(fn(params, padded[i:i + batch_size]))
         for i in range(0, len(padded), batch_size)]
  return np.concatenate(out)[:n]
