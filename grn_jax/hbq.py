"""Hierarchical Binary Quantization (HBQ): latents in [-1, 1] <-> discrete labels.

HBQ halves the interval `rounds` times (official: `hbq_round`, M). Round r emits the bit
b_r = [f > q_r] (strict, so a value on a threshold goes to the lower bin) and moves the
running estimate q by +-2^-(r+1). The result is a uniform mid-point quantizer with 2^M bins:

  label = clip(ceil((f + 1) * 2^(M-1)) - 1, 0, 2^M - 1),   dequant = -1 + (2 label + 1) 2^-M.

Label modes (channels-last throughout):
  * "ind": one label per latent channel, 2^M classes, most significant bit = first round.
    int32 [..., d].
  * "bit": M binary labels per latent channel, round-major: label j = round * d + channel.
    int32 [..., M * d].

One-hot layouts of the official networks (K classes, D labels per token):
  * C2I (class-major): channel k * D + j          -> `onehot_class_major`.
  * T2I/T2V (label-major): channel j * K + k      -> `onehot_label_major`.
"""

import jax.numpy as jnp
import numpy as np

LABEL_MODES = ("ind", "bit")


def _check_mode(label_mode: str) -> None:
  if label_mode not in LABEL_MODES:
    raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {label_mode!r}.")


def _check_rounds(rounds: int) -> None:
  if not isinstance(rounds, (int, np.integer)) or rounds < 1 or rounds > 16:
    raise ValueError(f"hbq_rounds must be an integer in [1, 16], got {rounds!r}.")


def num_classes(rounds: int, label_mode: str) -> int:
  """Classes per label: 2^M for 'ind', 2 for 'bit'."""
  _check_mode(label_mode)
  _check_rounds(rounds)
  return 2**rounds if label_mode == "ind" else 2


def num_labels(latent_dim: int, rounds: int, label_mode: str) -> int:
  """Labels per latent token: d for 'ind', M * d for 'bit'."""
  _check_mode(label_mode)
  _check_rounds(rounds)
  return latent_dim if label_mode == "ind" else rounds * latent_dim


def latent_to_bits(latent: jnp.ndarray, rounds: int) -> jnp.ndarray:
  """Successive halving. float [..., d] -> int32 [..., M, d] (round axis before channel)."""
  _check_rounds(rounds)
  latent = jnp.asarray(latent, jnp.float32)
  estimate = jnp.zeros_like(latent)
  bits = []
  for r in range(rounds):
    step = 0.5 ** (r + 1)
    bit = latent > estimate
    bits.append(bit.astype(jnp.int32))
    estimate = estimate + jnp.where(bit, step, -step)
  return jnp.stack(bits, axis=-2)


def bits_to_latent(bits: jnp.ndarray) -> jnp.ndarray:
  """int [..., M, d] bits -> float32 [..., d] bin centres."""
  rounds = bits.shape[-2]
  steps = jnp.asarray([0.5 ** (r + 1) for r in range(rounds)], jnp.float32)
  signs = jnp.where(bits == 1, 1.0, -1.0).astype(jnp.float32)
  return jnp.einsum("...rd,r->...d", signs, steps)


def bits_to_index(bits: jnp.ndarray) -> jnp.ndarray:
  """int [..., M, d] -> int32 [..., d] index labels (first round = most significant)."""
  rounds = bits.shape[-2]
  weights = jnp.asarray([2 ** (rounds - 1 - r) for r in range(rounds)], jnp.int32)
  return jnp.einsum("...rd,r->...d", bits.astype(jnp.int32), weights)


def index_to_bits(index: jnp.ndarray, rounds: int) -> jnp.ndarray:
  """int [..., d] index labels -> int32 [..., M, d] bits."""
  _check_rounds(rounds)
  index = jnp.asarray(index, jnp.int32)
  shifts = jnp.asarray([rounds - 1 - r for r in range(rounds)], jnp.int32)
  return (index[..., None, :] >> shifts[:, None]) & 1


def quantize(latent: jnp.ndarray, rounds: int, label_mode: str = "ind") -> jnp.ndarray:
  """Latent float [..., d] in [-1, 1] -> int32 labels [..., d] ('ind') or [..., M*d] ('bit')."""
  _check_mode(label_mode)
  bits = latent_to_bits(latent, rounds)
  if label_mode == "ind":
    return bits_to_index(bits)
  return bits.reshape(*bits.shape[:-2], rounds * bits.shape[-1])


def dequantize(labels: jnp.ndarray, rounds: int, label_mode: str = "ind") -> jnp.ndarray:
  """Labels (see `quantize`) -> float32 latent [..., d] of bin centres."""
  _check_mode(label_mode)
  _check_rounds(rounds)
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"HBQ labels must be integers, got {labels.dtype}.")
  if label_mode == "ind":
    bits = index_to_bits(labels, rounds)
  else:
    if labels.shape[-1] % rounds:
      raise ValueError(
          f"bit labels need a last axis divisible by hbq_rounds={rounds}, got {labels.shape}.")
    bits = labels.reshape(*labels.shape[:-1], rounds, labels.shape[-1] // rounds)
  return bits_to_latent(bits)


def quantize_closed_form(latent, rounds: int) -> np.ndarray:
  """Numpy reference of the 'ind' labels: clip(ceil((f+1) 2^(M-1)) - 1, 0, 2^M - 1)."""
  latent = np.asarray(latent, np.float64)
  levels = 2**rounds
  return np.clip(np.ceil((latent + 1.0) * 2 ** (rounds - 1)) - 1, 0, levels - 1).astype(np.int32)


def onehot_class_major(labels: jnp.ndarray, classes: int, dtype=jnp.float32) -> jnp.ndarray:
  """int [..., D] -> [..., K*D], channel k*D + j (the official C2I layout)."""
  onehot = jnp.asarray(labels)[..., None, :] == jnp.arange(classes)[:, None]
  return onehot.reshape(*onehot.shape[:-2], -1).astype(dtype)


def onehot_label_major(labels: jnp.ndarray, classes: int, dtype=jnp.float32) -> jnp.ndarray:
  """int [..., D] -> [..., D*K], channel j*K + k (the official T2I/T2V layout)."""
  onehot = jnp.asarray(labels)[..., :, None] == jnp.arange(classes)
  return onehot.reshape(*onehot.shape[:-2], -1).astype(dtype)
