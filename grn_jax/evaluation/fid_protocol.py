"""How images become FID Inception inputs: the two protocols, and which one a reference needs.

The same Inception weights give different FIDs under different preprocessing, in exactly the
decimals papers compare. Two protocols are in use:

  torch_fidelity  TensorFlow 1.x's FID graph as torch-fidelity replicates it (and as the TF graph
                  used by the ADM evaluator runs it): uint8 pixels as floats in [0, 255],
                  resized to 299x299 by TF1's legacy bilinear `ResizeBilinear` (align_corners
                  False, no half-pixel centres: source = destination * in / out), then
                  (x - 128) / 128. The official GRN evaluation computes torch-fidelity's FID
                  against JiT's statistics, so this is the protocol of the paper's numbers and
                  our default.
  pytorch_fid     pytorch-fid's preprocessing: pixels / 255 resized by bilinear interpolation
                  with half-pixel centres (F.interpolate, align_corners=False), then 2 x - 1.

A reference statistics file says its protocol: ours store it (`reference.save_stats`), known
public files map by name (REFERENCE_PROTOCOLS); `resolve_protocol('auto', ...)` picks it.
"""

import os

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

TORCH_FIDELITY = "torch_fidelity"
PYTORCH_FID = "pytorch_fid"
PROTOCOLS = (TORCH_FIDELITY, PYTORCH_FID)
AUTO = "auto"
DEFAULT_PROTOCOL = TORCH_FIDELITY
INPUT_SIZE = 299

# Public reference statistics and the protocol they were computed with (see reference.py).
REFERENCE_PROTOCOLS = {
    "jit_in256_stats.npz": TORCH_FIDELITY,           # torch-fidelity (the official GRN numbers)
    "jit_in512_stats.npz": TORCH_FIDELITY,
    "VIRTUAL_imagenet256_labeled.npz": TORCH_FIDELITY,  # ADM evaluator: the TF1 graph
    "VIRTUAL_imagenet512.npz": TORCH_FIDELITY,
}


def _tf1_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(low index int32 [out], high index int32 [out], fraction float32 [out]) of TF1's legacy
  bilinear sampling along one axis, in float32 exactly as torch-fidelity computes them."""
  source = np.arange(out_size, dtype=np.float32) * np.float32(in_size / out_size)
  low = source.astype(np.int32)  # source >= 0: truncation is the floor
  high = np.minimum(low + 1, in_size - 1).astype(np.int32)
  return low, high, source - low.astype(np.float32)


def resize_bilinear_tf1(images: jax.Array, height: int, width: int) -> jax.Array:
  """TF 1.x `ResizeBilinear(align_corners=False, half_pixel_centers=False)` of images.

  Args:
    images: float [B, H, W, C].
    height, width: the output size.

  Returns:
    float32 [B, height, width, C]: with s = y * H / height, y0 = floor(s), y1 = min(y0 + 1,
    H - 1) and dy = s - y0 (likewise along x), top = x[y0, x0] + (x[y0, x1] - x[y0, x0]) dx,
    bottom likewise at y1, out = top + (bottom - top) dy; evaluated in this order, as
    torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x`.
  """
  x = jnp.asarray(images, jnp.float32)
  y_low, y_high, dy = _tf1_axis(x.shape[1], height)
  x_low, x_high, dx = _tf1_axis(x.shape[2], width)
  top, bottom = x[:, y_low], x[:, y_high]
  dx = dx[None, None, :, None]
  top = top[:, :, x_low] + (top[:, :, x_high] - top[:, :, x_low]) * dx
  bottom = bottom[:, :, x_low] + (bottom[:, :, x_high] - bottom[:, :, x_low]) * dx
  return top + (bottom - top) * dy[None, :, None, None]


def preprocess(images: jax.Array, resize_to: int = INPUT_SIZE,
               protocol: str = DEFAULT_PROTOCOL) -> jax.Array:
  """uint8 [B, H, W, 3] (or float in [0, 1]) -> float32 [B, S, S, 3], the Inception input.

  Args:
    images: the images, channels last.
    resize_to: S (299 for FID); 0 keeps the size (tests on small inputs).
    protocol: 'torch_fidelity' or 'pytorch_fid' (see the module docstring).
  """
  if protocol not in PROTOCOLS:
    raise ValueError(f"unknown FID protocol {protocol!r}; choose from {PROTOCOLS}.")
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"images must be [B, H, W, 3], got {images.shape}.")
  x = images.astype(jnp.float32)
  integer = jnp.issubdtype(images.dtype, jnp.integer)
  resize = bool(resize_to) and images.shape[1:3] != (resize_to, resize_to)
  if protocol == TORCH_FIDELITY:
    x = x if integer else x * 255.0
    if resize:
      x = resize_bilinear_tf1(x, resize_to, resize_to)
    return (x - 128.0) / 128.0
  x = x / 255.0 if integer else x
  if resize:
    x = jax.image.resize(x, (x.shape[0], resize_to, resize_to, 3), "bilinear", antialias=False)
  return 2.0 * x - 1.0


def resolve_protocol(requested: str, reference_path: str = "",
                     stored: str | None = None) -> str:
  """The protocol to compute features with.

  Args:
    requested: 'auto' or one of PROTOCOLS (config.eval.protocol, --protocol).
    reference_path: the reference statistics file ('' when there is none, e.g. rFID).
    stored: the protocol the reference file records (our `save_stats` files), if any.

  Returns:
    `requested` unless it is 'auto'; then the stored protocol, else the known protocol of the
    file's name, else DEFAULT_PROTOCOL (logged, with the way to choose another).
  """
  if requested != AUTO and requested not in PROTOCOLS:
    raise ValueError(f"unknown FID protocol {requested!r}; choose from {(AUTO,) + PROTOCOLS}.")
  known = stored or REFERENCE_PROTOCOLS.get(os.path.basename(reference_path))
  if requested != AUTO:
    if known and known != requested:
      logging.warning("FID protocol %s requested, but %s was computed with %s: the numbers are "
                      "not comparable to the file's.", requested, reference_path, known)
    return requested
  if known:
    return known
  logging.info("FID protocol: %s (the official one; %s does not record its protocol, pass "
               "--protocol / config.eval.protocol to choose).", DEFAULT_PROTOCOL,
               reference_path or "no reference file")
  return DEFAULT_PROTOCOL
