r"""Measured matmul peak of the local device: the denominator of MFU on machines without a spec.

  python -m grn_jax.benchmarks.peak [--n=2048] [--dtype=float32]

(grn_jax.flops.measure_matmul_peak_flops; the trainer measures the same at start-up when
config.train.peak_flops_per_device is 0.)
"""

from absl import flags
import jax
import jax.numpy as jnp

from grn_jax import flops
from grn_jax.benchmarks import timing


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_integer("n", 2048, "Matrix side.")
  flags.DEFINE_string("dtype", "float32", "Operand dtype.")


def main(argv):
  del argv
  fl = flags.FLAGS
  peak = flops.measure_matmul_peak_flops(fl.n, jnp.dtype(fl.dtype))
  print(f"{jax.devices()[0].platform} {fl.dtype} {fl.n}^2 matmul: {peak / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
  timing.run(define_flags, main)
