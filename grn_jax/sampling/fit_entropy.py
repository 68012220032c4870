r"""Fits the entropy -> steps map of entropy-guided sampling for a trained model.

  python -m grn_jax.sampling.fit_entropy --runs=DIR_10,DIR_20,DIR_30,DIR_50 [--tolerance=0.05] \
      [--pairs_out=pairs.csv] [--warmup_steps=5] [--entropy_budget=after_warmup] \
      [--min_steps=10] [--max_steps=50]
  python -m grn_jax.sampling.fit_entropy --pairs=pairs.csv [the same options]

The map is steps = k H + b: H is a sample's normalised entropy at the warm-up step, steps the
total refinement steps it needs. The command fits k and b_total by least squares, prints k and b
in the convention of `--entropy_budget` (b = b_total - warmup_steps for 'after_warmup', the
convention of the T2I/T2V sampler and of the official code), the fit's R^2, the mean budget the
fitted map gives these samples after clipping to [min_steps, max_steps], and the config flags to
use.

`--runs`: output directories of the same outputs sampled with several fixed budgets S that
share the warm-up: the same config, seed and warm-up, only the budget differs, i.e. adaptive
sampling with k = 0 and b = S, which runs every output exactly S steps and leaves its first
warm-up steps and H identical for every S:
  C2I:     --mode=sample --config.sample.adaptive=True --config.sample.entropy_k=0
           --config.sample.entropy_b=S --config.sample.entropy_budget=total
           --config.sample.output_dir=DIR_S
  T2I/T2V: --mode=t2i|t2v --config.sample.adaptive=True --config.sample.entropy_k=0
           --config.sample.entropy_b=S-W (W = config.sample.warmup_steps)
           --config.sample.output_dir=DIR_S
Every family's outputs are read (C2I PNGs, T2I PNGs, T2V videos through their GIFs, each with the
steps and H it recorded; sampling/outputs.py). An output's distance at budget S is the RMS
difference of its pixels (in [0, 1]) from the same output with the most steps, and the steps it
needs are the smallest S whose distance is <= `--tolerance`. Runs whose H disagree did not share
the warm-up and are refused. `--pairs_out` keeps the pairs (a CSV that `--pairs` reads back).

`--pairs`: one measured pair per sample from any quality measure of your own (a CSV with an
optional `entropy,steps` header, or an .npz with arrays `entropy` and `steps`).
"""

import csv
import json
import os

from absl import app
from absl import flags
import numpy as np

from grn_jax.sampling import outputs
from grn_jax.sampling import spec as spec_lib



def load_pairs(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(entropy float64 [N], steps float64 [N]) from a CSV or npz file."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"no pairs file at {path}.")
  if path.endswith(".npz"):
    with np.load(path) as data:
      if "entropy" not in data or "steps" not in data:
        raise ValueError(f"{path} must hold arrays 'entropy' and 'steps', has {data.files}.")
      return np.asarray(data["entropy"], np.float64), np.asarray(data["steps"], np.float64)
  rows = []
  with open(path, newline="") as f:
    for row in csv.reader(f):
      if not row or row[0].strip().startswith("#"):
        continue
      try:
        rows.append((float(row[0]), float(row[1])))
      except (ValueError, IndexError) as e:
        if rows:  # only the first line may be a header
          raise ValueError(f"{path}: bad row {row}; expected 'entropy,steps'.") from e
  if not rows:
    raise ValueError(f"{path} holds no (entropy, steps) rows.")
  data = np.asarray(rows, np.float64)
  return data[:, 0], data[:, 1]


def fit_entropy_map(entropy, steps, warmup_steps: int = spec_lib.OFFICIAL_WARMUP_STEPS,
                    entropy_budget: str = "after_warmup") -> dict[str, float]:
  """Least-squares fit of total steps = k H + b_total.

  Args:
    entropy: normalised entropies H in [0, 1], [N].
    steps: total steps needed (warm-up included), [N].
    warmup_steps: the sampler's warm-up (for the 'after_warmup' convention).
    entropy_budget: 'after_warmup' | 'total', the convention of the returned b.

  Returns:
    dict(k, b, r2) such that refine.budget_from_entropy reproduces the fit before clipping.
  """
  entropy, steps = np.asarray(entropy, np.float64), np.asarray(steps, np.float64)
  if entropy.shape != steps.shape or entropy.ndim != 1:
    raise ValueError(f"entropy {entropy.shape} and steps {steps.shape} must be equal-length "
                     "vectors.")
  if entropy_budget not in spec_lib.ENTROPY_BUDGETS:
    raise ValueError(f"entropy_budget must be one of {spec_lib.ENTROPY_BUDGETS}, got "
                     f"{entropy_budget!r}.")
  if np.any((entropy < 0) | (entropy > 1)):
    raise ValueError("entropies must be normalised to [0, 1].")
  if len(np.unique(entropy)) < 2:
    raise ValueError("fitting k and b needs at least two different entropies.")
  k, b_total = np.polyfit(entropy, steps, 1)
  residual = steps - (k * entropy + b_total)
  spread = np.sum((steps - steps.mean()) ** 2)
  r2 = 1.0 - np.sum(residual ** 2) / spread if spread > 0 else 1.0
  offset = warmup_steps if entropy_budget == "after_warmup" else 0
  return dict(k=float(k), b=float(b_total - offset), r2=float(r2))


def _run_record(out_dir: str) -> dict:
  path = os.path.join(out_dir, outputs.RECORD_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{out_dir} has no {outputs.RECORD_FILE}: it is not an output directory "
                            "of grn_jax generation (--mode=sample|t2i|t2v|i2v).")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def run_writer(out_dir: str) -> tuple[outputs.OutputWriter, int]:
  """(the writer that reads the outputs of a run directory, how many outputs it holds)."""
  record = _run_record(out_dir)
  if "mode" in record:   # T2I/T2V (sampling/t2iv_run.py): a JSON record per output
    writer = outputs.VisualWriter(record["mode"] != "t2i", record["sample"]["fps"],
                                  {k: v for k, v in record.items() if k not in outputs.RUN_KEYS})
    count = sum(1 for n in os.listdir(out_dir) if n.endswith(".json") and n[:6].isdigit())
  else:                  # C2I: PNGs with text chunks
    writer = outputs.PngWriter()
    count = sum(1 for n in os.listdir(out_dir) if n.endswith(".png") and n[:6].isdigit()
                and len(n) == len("000000.png"))
  return writer, count


def pairs_from_runs(run_dirs, tolerance: float) -> dict[str, np.ndarray]:
  """Measured (entropy, steps) pairs from runs of the same outputs at several budgets.

  Args:
    run_dirs: output directories (module docstring), at least two.
    tolerance: largest RMS pixel distance (pixels in [0, 1]) from the most-steps output at
      which a budget counts as enough.

  Returns:
    dict(entropy float64 [N], steps float64 [N] (the smallest sufficient budget per output),
    budgets float64 [R, N] (the steps every run used), distance float64 [R, N], warmup_steps
    (the runs' config.sample.warmup_steps), family 'c2i' | 't2iv').
  """
  if len(run_dirs) < 2:
    raise ValueError("--runs needs at least two output directories (budgets) to compare.")
  if not tolerance > 0:
    raise ValueError(f"--tolerance must be > 0, got {tolerance}.")
  readers = [run_writer(d) for d in run_dirs]
  warmups = {d: _run_record(d)["sample"]["warmup_steps"] for d in run_dirs}
  if len(set(warmups.values())) > 1:
    raise ValueError(f"the runs used different warm-ups (config.sample.warmup_steps): {warmups}.")
  counts = {d: n for d, (_, n) in zip(run_dirs, readers)}
  n = min(counts.values())
  if n == 0 or len(set(counts.values())) > 1:
    raise ValueError(f"the runs must hold the same, non-zero number of outputs: {counts}.")
  entropy, budgets, distance = np.zeros(n), np.zeros((len(run_dirs), n)), np.zeros(
      (len(run_dirs), n))
  for i in range(n):
    pixels = []
    for r, (d, (writer, _)) in enumerate(zip(run_dirs, readers)):
      try:
        image, meta = writer.read(d, i)
      except outputs.OutputDamaged as e:
        raise ValueError(f"output {i} of {d} cannot be read: {e}") from e
      if "grn_steps" not in meta or "grn_entropy" not in meta:
        raise ValueError(f"output {i} of {d} records no steps or entropy.")
      budgets[r, i] = meta["grn_steps"]
      if r == 0:
        entropy[i] = meta["grn_entropy"]
      elif abs(meta["grn_entropy"] - entropy[i]) > 1e-5:
        raise ValueError(
            f"output {i} has entropy {entropy[i]:.6f} in {run_dirs[0]} but "
            f"{meta['grn_entropy']:.6f} in {d}: the runs did not share the warm-up (sample them "
            "with the same config and seed; only the budget may differ, module docstring).")
      pixels.append(np.asarray(image, np.float64) / 255.0)
    if len({p.shape for p in pixels}) > 1:
      raise ValueError(f"output {i} has different shapes in the runs: "
                       f"{[p.shape for p in pixels]}.")
    reference = pixels[int(np.argmax(budgets[:, i]))]
    distance[:, i] = [np.sqrt(np.mean((p - reference) ** 2)) for p in pixels]
  enough = np.where(distance <= tolerance, budgets, np.inf)
  family = "t2iv" if isinstance(readers[0][0], outputs.VisualWriter) else "c2i"
  return dict(entropy=entropy, steps=enough.min(axis=0), budgets=budgets, distance=distance,
              warmup_steps=int(warmups[run_dirs[0]]), family=family)


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("pairs", None, "CSV (entropy,steps) or npz with arrays entropy, steps.")
  flags.DEFINE_list("runs", None, "Output directories of the same outputs at several budgets "
                    "(module docstring); instead of --pairs.")
  flags.DEFINE_float("tolerance", 0.05, "--runs: the RMS pixel distance (pixels in [0, 1]) "
                     "from the most-steps output at which a budget is enough.")
  flags.DEFINE_string("pairs_out", None, "--runs: also write the measured pairs to this CSV.")
  flags.DEFINE_integer("warmup_steps", spec_lib.OFFICIAL_WARMUP_STEPS, "Sampler warm-up steps.")
  flags.DEFINE_enum("entropy_budget", "after_warmup", list(spec_lib.ENTROPY_BUDGETS),
                    "Convention of the printed b (config.sample.entropy_budget).")
  flags.DEFINE_integer("min_steps", 10, "config.sample.min_steps, for the clipped mean budget.")
  flags.DEFINE_integer("max_steps", 50, "config.sample.max_steps, for the clipped mean budget.")


def main(argv):
  del argv
  fl = flags.FLAGS
  if bool(fl.pairs) == bool(fl.runs):
    raise app.UsageError("give exactly one of --pairs=FILE and --runs=DIR,DIR,...")
  warmup_steps, family = fl.warmup_steps, "c2i"
  if fl.runs:
    measured = pairs_from_runs(fl.runs, fl.tolerance)
    entropy, steps = measured["entropy"], measured["steps"]
    warmup_steps, family = measured["warmup_steps"], measured["family"]
    if family == "t2iv" and fl.entropy_budget != "after_warmup":
      raise app.UsageError("the T2I/T2V sampler's b is 'after_warmup' (the official "
                           "convention): drop --entropy_budget.")
    print(f"{'run':<40} {'steps (mean)':>12} {'RMS distance (mean)':>20} {'enough':>7}")
    for d, budget, dist in zip(fl.runs, measured["budgets"], measured["distance"]):
      print(f"{d[-40:]:<40} {budget.mean():>12.2f} {dist.mean():>20.4f} "
            f"{np.mean(dist <= fl.tolerance):>7.1%}")
    if fl.pairs_out:
      with open(fl.pairs_out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["entropy", "steps"])
        writer.writerows(zip(entropy.tolist(), steps.tolist()))
      print(f"wrote {len(entropy)} pairs to {fl.pairs_out}")
  else:
    entropy, steps = load_pairs(fl.pairs)
  fit = fit_entropy_map(entropy, steps, warmup_steps, fl.entropy_budget)
  offset = warmup_steps if fl.entropy_budget == "after_warmup" else 0
  budget = np.clip(np.round(fit["k"] * entropy + fit["b"]) + offset, fl.min_steps, fl.max_steps)
  print(f"{len(entropy)} pairs: H in [{entropy.min():.4f}, {entropy.max():.4f}], steps in "
        f"[{steps.min():.0f}, {steps.max():.0f}] (mean {steps.mean():.2f})")
  print(f"k = {fit['k']:.6f}, b = {fit['b']:.6f} ({fl.entropy_budget}), R^2 = {fit['r2']:.4f}")
  print(f"mean budget on these samples after clipping to [{fl.min_steps}, {fl.max_steps}]: "
        f"{budget.mean():.2f} steps")
  budget_flag = ("" if family == "t2iv" else
                 f"--config.sample.entropy_budget={fl.entropy_budget} ")
  print(f"flags: --config.sample.adaptive=True --config.sample.entropy_k={fit['k']:.6f} "
        f"--config.sample.entropy_b={fit['b']:.6f} {budget_flag}"
        f"--config.sample.warmup_steps={warmup_steps}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
