r"""The project's speed table: forward, train step, sampler, tokenizer; optionally next to the
official PyTorch code timed in the same run.

  python -m grn_jax.benchmarks [--official=/path/to/MGenAI/GRN] [--out=benchmarks.json]
      [--model_variant=B] [--sampler_steps=10] [--sections=forward,train_step,sampler,tokenizer]
      [--tokenizer_cases=image16,video64]

Every row carries the machine's measured matmul peak (grn_jax.flops) so numbers from different
machines can be compared as a fraction of what the chip can do. With --official each row that
has an official counterpart also gets the official seconds per call and the ratio official /
ours (> 1: grn_jax is faster), each pair timed one right after the other in this process. Rows
come from
  * grn_jax.benchmarks.forward (time_ours / time_official: the sampler's model call),
  * grn_jax.benchmarks.train_step (the full C2I training step / the official Denoiser step),
  * grn_jax.benchmarks.sampler (fixed and adaptive sampling, the bare forwards of the fixed run
    and the loop's overhead over them; the official Denoiser.generate per CFG step times the
    number of steps: its cost per step does not depend on the step),
  * grn_jax.benchmarks.tokenizer (encode / decode, the official HBQ_Tokenizer),
each a list of dicts {name, seconds, items, unit, flops (0 if unknown), official_seconds
(optional)}; a section that fails (e.g. out of memory) becomes an 'error' row instead of
stopping the table.
"""

import json
import platform as py_platform
import traceback

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import c2i as c2i_configs
from grn_jax import flops
from grn_jax import platform
from grn_jax.benchmarks import forward
from grn_jax.benchmarks import sampler
from grn_jax.benchmarks import tokenizer
from grn_jax.benchmarks import train_step
from grn_jax.benchmarks import timing

SECTIONS = ("forward", "train_step", "sampler", "tokenizer")

_OUT = flags.DEFINE_string("out", "benchmarks.json", "Where the table goes as JSON ('' = none).")
_MODEL = flags.DEFINE_string("model_variant", "B", "C2I model size for the model rows.")
_OFFICIAL = flags.DEFINE_string("official", None,
                                "A checkout of the official GRN repository (needs PyTorch): "
                                "time it next to every row that has a counterpart.")
_SAMPLER_STEPS = flags.DEFINE_integer(
    "sampler_steps", 0, "Fixed sampler steps (0: 10 on CPU, where per-step time is what counts "
    "and 50 take many minutes; 50, the official setting, elsewhere).")
_OFFICIAL_STEPS = flags.DEFINE_integer("official_sampler_steps", 2,
                                       "Steps of the official sampler to time (per-step cost).")
_SECTIONS = flags.DEFINE_list("sections", list(SECTIONS), f"Which of {SECTIONS} to run.")
_TOKENIZER_CASES = flags.DEFINE_list("tokenizer_cases", ["image16"],
                                     "image16 and/or video64 (the 17-frame clip: minutes).")


def forward_rows(variant: str, batch: int, dtype: str, official: str | None) -> list[dict]:
  cfg = c2i_configs.model_config(variant)
  cfg.dtype = dtype
  params, inputs, seconds, _, _, _ = forward.time_ours(cfg, batch, 3)
  row = dict(name=f"forward GRN-{variant} (batch {batch}, {dtype})", seconds=seconds,
             items=batch, unit="images", flops=flops.c2i_forward_flops_per_example(cfg) * batch)
  if official:
    row["official_seconds"] = forward.time_official(official, cfg, params, inputs, 3)[0]
  return [row]


def train_rows(variant: str, batch: int, dtype: str, official: str | None) -> list[dict]:
  config = train_step.bench_config(variant, batch, dtype)
  seconds, _ = train_step.time_ours(config, 3)
  step_flops = flops.c2i_train_flops_per_example(config.model) * batch
  row = dict(name=f"train step GRN-{variant} (batch {batch}, {dtype})", seconds=seconds,
             items=batch, unit="images", flops=step_flops)
  if official:
    row["official_seconds"] = train_step.time_official(official, config, 3, variant)
  return [row]


def sampler_rows(variant: str, batch: int, dtype: str, num_steps: int, official: str | None,
                 official_steps: int) -> list[dict]:
  r = sampler.run_benchmark(variant, batch, dtype, num_steps, log=lambda *_: None)
  overhead = r["fixed_s"] / r["bare_s"] - 1
  rows = []
  for name in ("fixed", "adaptive"):
    out = r[name]
    rows.append(dict(
        name=f"sample GRN-{variant} {name} (steps {np.mean(out.steps):.1f}, NFE/img "
             f"{np.mean(out.row_nfe):.1f})", seconds=r[f"{name}_s"], items=batch,
        unit="images", flops=0))
  rows[0]["name"] += f", loop {overhead:+.1%} over its bare forwards"
  rows.append(dict(name=f"  bare forwards of the fixed run ({num_steps} steps)",
                   seconds=r["bare_s"], items=batch, unit="images", flops=0))
  if official:
    per_step = sampler.time_official(official, r["config"], r["params"], batch, official_steps,
                                     variant)
    rows[0]["official_seconds"] = per_step * num_steps  # official: NFE/img = 2 * steps
  return rows


def tokenizer_rows(cases, official: str | None) -> list[dict]:
  rows = []
  for case in cases:
    r = tokenizer.time_ours(case, 2)
    off = tokenizer.time_official(official, case, r["params"], r["x"], 2) if official else None
    what = "image 256^2" if case == "image16" else "17x256^2 clip"
    unit = "images" if r["x"].ndim == 4 else "clips"
    latent_dim = tokenizer.released_config(case).latent_dim
    for stage in ("encode", "decode"):
      row = dict(name=f"tokenizer {stage}, {what} (d={latent_dim})", seconds=r[stage], items=1,
                 unit=unit, flops=0.0)
      if off is not None:
        row["official_seconds"] = off[stage]
      rows.append(row)
  return rows


def collect(variant: str, official: str | None = None, sections=SECTIONS,
            sampler_steps: int = 0, official_sampler_steps: int = 2,
            tokenizer_cases=("image16",)) -> dict:
  """Runs the sections; returns the table (device, peak, rows) as a dict."""
  unknown = set(sections) - set(SECTIONS)
  if unknown:
    raise ValueError(f"--sections: unknown {sorted(unknown)}; choose from {SECTIONS}.")
  device = jax.devices()[0]
  on_cpu = device.platform == "cpu"
  dtype = "float32" if on_cpu else "bfloat16"
  batch = 8 if on_cpu else 256
  steps = sampler_steps or (10 if on_cpu else 50)
  peak_flops = flops.measure_matmul_peak_flops(2048, jnp.dtype(dtype))
  sources = dict(
      forward=lambda: forward_rows(variant, batch, dtype, official),
      train_step=lambda: train_rows(variant, batch, dtype, official),
      sampler=lambda: sampler_rows(variant, batch, dtype, steps, official,
                                   official_sampler_steps),
      tokenizer=lambda: tokenizer_rows(tokenizer_cases, official))
  rows = []
  for source in SECTIONS:
    if source not in sections:
      continue
    try:
      rows.extend(sources[source]())
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      rows.append(dict(name=f"{source}: error", error=f"{type(e).__name__}: {e}"))
  for row in rows:
    row["peak_flops"] = peak_flops
    if "seconds" in row:
      row["items_per_second"] = row["items"] / row["seconds"]
      row["achieved_flops"] = row["flops"] / row["seconds"]
      row["fraction_of_peak"] = row["achieved_flops"] / peak_flops if row["flops"] else None
      if "official_seconds" in row:
        row["ratio"] = row["official_seconds"] / row["seconds"]
  return dict(device=f"{device.platform} {device.device_kind}", devices=jax.device_count(),
              host=py_platform.node(), dtype=dtype, peak_flops=peak_flops,
              official=official, rows=rows)


def format_table(table: dict) -> str:
  """The table as text; ratio = official s / our s (> 1: grn_jax is faster)."""
  lines = [f"{table['device']} x{table['devices']}, {table['dtype']}; measured 2048^2 matmul "
           f"peak {table['peak_flops'] / 1e9:.1f} GFLOP/s",
           f"{'benchmark':<76}{'s/call':>9}{'items/s':>13}{'GFLOP/s':>9}{'of peak':>8}"
           f"{'official s':>11}{'ratio':>7}"]
  for row in table["rows"]:
    if "error" in row:
      lines.append(f"{row['name']:<76}{row['error']}")
      continue
    frac = row["fraction_of_peak"]
    gflops = f"{row['achieved_flops'] / 1e9:.1f}" if row["flops"] else "-"
    official = f"{row['official_seconds']:.3f}" if "official_seconds" in row else "-"
    ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "-"
    lines.append(f"{row['name']:<76}{row['seconds']:>9.3f}"
                 f"{row['items_per_second']:>10.2f} {row['unit'][:2]}{gflops:>9}"
                 f"{(f'{frac:.1%}' if frac is not None else '-'):>8}{official:>11}{ratio:>7}")
  return "\n".join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  table = collect(_MODEL.value, _OFFICIAL.value, tuple(_SECTIONS.value), _SAMPLER_STEPS.value,
                  _OFFICIAL_STEPS.value, tuple(_TOKENIZER_CASES.value))
  print(format_table(table))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(table, f, indent=2)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  timing.run(lambda: None, main)
