r"""The project's speed table: train step, sampler (fixed vs adaptive), tokenizer encode/decode.

  python -m grn_jax.benchmarks [--out=benchmarks.json] [--variant=B]

Every row carries the machine's measured matmul peak (grn_jax.flops) so numbers from
different machines can be compared as a fraction of what the chip can do. Rows come from
  * grn_jax.benchmarks.train_step (time_ours: the full C2I training step),
  * grn_jax.benchmarks.sampler.benchmark_rows(variant, batch, dtype) and
  * grn_jax.benchmarks.tokenizer.benchmark_rows(batch, dtype),
each a list of dicts {name, seconds, items, unit, flops (0 if unknown)}; a benchmark that fails
(e.g. out of memory) becomes an 'error' row instead of stopping the table.
"""

import json
import platform as py_platform
import traceback

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from grn_jax import flops
from grn_jax import platform
from grn_jax.benchmarks import sampler
from grn_jax.benchmarks import tokenizer
from grn_jax.benchmarks import train_step

_OUT = flags.DEFINE_string("out", "benchmarks.json", "Where the table goes as JSON ('' = none).")
_MODEL = flags.DEFINE_string("model_variant", "B", "C2I model size for the train/sampler rows.")


def train_rows(variant: str, batch: int, dtype: str) -> list[dict]:
  config = train_step.bench_config(variant, batch, dtype)
  seconds, _ = train_step.time_ours(config, 3)
  step_flops = flops.c2i_train_flops_per_example(config.model) * batch
  return [dict(name=f"train step GRN-{variant} (batch {batch}, {dtype})", seconds=seconds,
               items=batch, unit="images", flops=step_flops)]


def collect(variant: str) -> dict:
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  dtype = "float32" if on_cpu else "bfloat16"
  batch = 8 if on_cpu else 256
  peak_flops = flops.measure_matmul_peak_flops(2048, jnp.dtype(dtype))
  rows = []
  sources = [("train_step", lambda: train_rows(variant, batch, dtype)),
             # 10 steps on CPU keeps the table under a few minutes; per-step time is what counts.
             ("sampler", lambda: sampler.benchmark_rows(variant=variant, batch=batch, dtype=dtype,
                                                        num_steps=10 if on_cpu else 50)),
             ("tokenizer", lambda: tokenizer.benchmark_rows(batch=batch, dtype=dtype))]
  for source, fn in sources:
    try:
      rows.extend(fn())
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      rows.append(dict(name=f"{source}: error", error=f"{type(e).__name__}: {e}"))
  for row in rows:
    row["peak_flops"] = peak_flops
    if "seconds" in row:
      row["items_per_second"] = row["items"] / row["seconds"]
      row["achieved_flops"] = row["flops"] / row["seconds"]
      row["fraction_of_peak"] = row["achieved_flops"] / peak_flops if row["flops"] else None
  return dict(device=f"{device.platform} {device.device_kind}", devices=jax.device_count(),
              host=py_platform.node(), dtype=dtype, peak_flops=peak_flops, rows=rows)


def format_table(table: dict) -> str:
  lines = [f"{table['device']} x{table['devices']}, {table['dtype']}; measured 2048^2 matmul "
           f"peak {table['peak_flops'] / 1e9:.1f} GFLOP/s",
           f"{'benchmark':<52}{'s/call':>10}{'items/s':>12}{'GFLOP/s':>10}{'of peak':>9}"]
  for row in table["rows"]:
    if "error" in row:
      lines.append(f"{row['name']:<52}{row['error']}")
      continue
    frac = row["fraction_of_peak"]
    lines.append(f"{row['name']:<52}{row['seconds']:>10.4f}"
                 f"{row['items_per_second']:>9.1f} {row['unit'][:2]}"
                 f"{row['achieved_flops'] / 1e9:>10.1f}"
                 f"{(f'{frac:.1%}' if frac is not None else '-'):>9}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  table = collect(_MODEL.value)
  print(format_table(table))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(table, f, indent=2)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  platform.configure_xla()  # before jax starts a backend
  app.run(main)
