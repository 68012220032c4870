r"""Measured matmul peak of the local device: the denominator of MFU on machines without a spec.

  python -m grn_jax.benchmarks.peak [--n=2048] [--dtype=float32]
"""

import time

import jax
import jax.numpy as jnp
import numpy as np


def measure_matmul_peak_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 10,
                              device: jax.Device | None = None) -> float:
  """FLOP/s of a jitted n x n @ n x n jnp.dot on one device (best of `repeats` chains of 4).

  Args:
    n: matrix side (2048 -> 17.2 GFLOP per product).
    dtype: operand dtype (float32 on CPU; bfloat16 for accelerator MXU/tensor-core peaks).
    repeats: timed repetitions after one warm-up; the fastest one counts.
    device: where to run (default: the first local device).

  Returns:
    Achieved FLOP/s (2 n^3 per product).
  """
  device = device or jax.local_devices()[0]
  rng = np.random.default_rng(0)
  a = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
  b = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
  chain = 4

  @jax.jit
  def products(a, b):
    # A dependent chain keeps the device busy without host round trips; scaling keeps it finite.
    x = a
    for _ in range(chain):
      x = jnp.dot(x, b, preferred_element_type=dtype) * jnp.asarray(1.0 / n, dtype)
    return x

  products(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    products(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return chain * 2.0 * n**3 / best


def main():
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  flags.DEFINE_integer("n", 2048, "Matrix side.")
  flags.DEFINE_string("dtype", "float32", "Operand dtype.")

  def run(_):
    flops = measure_matmul_peak_flops(flags.FLAGS.n, jnp.dtype(flags.FLAGS.dtype))
    print(f"{jax.devices()[0].platform} {flags.FLAGS.dtype} {flags.FLAGS.n}^2 matmul: "
          f"{flops / 1e9:.1f} GFLOP/s")

  app.run(run)


if __name__ == "__main__":
  main()
