"""What every benchmark measures the same way: wall time of a call, peak host memory, start-up.

  seconds, first, out = timing.best_of(fn, repeats)     # fn's result is waited for
  timing.peak_rss_gib()                                # GiB, since timing.reset_peak_rss()
  if __name__ == "__main__":
    timing.run(define_flags, main)

`best_of` calls fn `warmup` times untimed (the first call compiles), then `repeats` times, and
returns the fastest (the figure least disturbed by other load on a shared machine), the
first call's seconds (compile included) and the last result.
"""

import resource
import time
from typing import Any, Callable

from absl import app
from absl import flags
import jax

from grn_jax import platform


def best_of(fn: Callable[[], Any], repeats: int, warmup: int = 1
            ) -> tuple[float, float, Any]:
  """(fastest of `repeats` timed calls, seconds of the first call, the last result)."""
  times, out = [], None
  for _ in range(warmup + max(repeats, 1)):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times[warmup:]), times[0], out


def peak_rss_gib() -> float:
  """The process's resident-memory high-water mark in GiB (since `reset_peak_rss`)."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 2**20
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak_rss() -> None:
  """Resets the high-water mark (Linux: /proc/self/clear_refs; elsewhere a no-op)."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


def define_common_flags(*, batch: int = 8, batch_help: str = "Batch size.",
                        dtype: str = "float32", dtype_help: str = "Compute dtype.",
                        repeats: int = 5, repeats_name: str = "repeats") -> None:
  """The flags the C2I benchmarks share: variant, batch, dtype, timed repeats, official."""
  flags.DEFINE_string("variant", "B", "Model size: B, L, H, G or tiny.")
  flags.DEFINE_integer("batch", batch, batch_help)
  flags.DEFINE_string("dtype", dtype, dtype_help)
  flags.DEFINE_integer(repeats_name, repeats, "Timed repetitions (after one warm-up).")
  flags.DEFINE_string("official", None, "Path to a checkout of the official GRN repository "
                      "(times the PyTorch code in the same run).")


def run(define_flags: Callable[[], None], main: Callable[[Any], None]) -> None:
  """A benchmark's command line: the CPU XLA flags before jax starts, its flags, absl's app."""
  platform.configure_xla()
  define_flags()
  app.run(main)
