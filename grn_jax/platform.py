"""XLA settings that the entry points apply before jax starts its backends.

  from grn_jax import platform
  platform.configure_xla()       # first thing in main(), before any jax computation

XLA reads `XLA_FLAGS` once, when the first backend starts, so this must run before anything
touches a device. It appends `CPU_XLA_FLAGS` to the environment's `XLA_FLAGS`, except for a flag
the user already set there (theirs wins), and does nothing when `JAX_PLATFORMS` names no CPU
backend. The flags only change how XLA's CPU compiler runs a program, never what it computes
beyond float rounding.

Why each flag (jax 0.10.2, a 2-core AVX-512 CPU, fp32):
  --xla_cpu_experimental_ynn_fusion_type=  (empty: no YNNPACK fusions) The default YNNPACK
      fusions run the HBQ tokenizer's 3x3 convolutions at 110-150 GFLOP/s; without them
      XLA's own convolution is faster: 17x256^2 clip encode / decode 30.3 s / 135.1 s -> 21.2 s
      / 110.5 s (official PyTorch on the same machine: 23.4 s / 118.2 s). The transformer's
      forward is unchanged within the noise of a shared machine (GRN-B batch 8: 8.04 s without,
      8.10 s with, measured alternately).
"""

import os
from typing import MutableMapping

CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _flag_name(flag: str) -> str:
  return flag.split("=", 1)[0]


def wants_cpu(environ: MutableMapping[str, str]) -> bool:
  """Whether jax may run on its CPU backend: JAX_PLATFORMS unset, empty or naming 'cpu'."""
  platforms = environ.get("JAX_PLATFORMS", "").strip()
  return not platforms or "cpu" in [p.strip() for p in platforms.split(",")]


def configure_xla(environ: MutableMapping[str, str] | None = None) -> str:
  """Adds CPU_XLA_FLAGS to environ['XLA_FLAGS'] (default os.environ) where the user set none.

  Args:
    environ: the environment to update (os.environ when None).

  Returns:
    The resulting XLA_FLAGS value.
  """
  environ = os.environ if environ is None else environ
  current = environ.get("XLA_FLAGS", "")
  if not wants_cpu(environ):
    return current
  given = {_flag_name(f) for f in current.split()}
  added = [f for f in CPU_XLA_FLAGS if _flag_name(f) not in given]
  if added:
    environ["XLA_FLAGS"] = " ".join(filter(None, [current.strip(), *added]))
  return environ.get("XLA_FLAGS", "")
