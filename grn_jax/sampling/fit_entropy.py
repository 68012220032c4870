r"""Fits the entropy -> steps map of entropy-guided sampling for a trained model.

  python -m grn_jax.sampling.fit_entropy --pairs=pairs.csv [--warmup_steps=5] \
      [--entropy_budget=after_warmup] [--min_steps=10] [--max_steps=50]

`pairs.csv` holds one measured pair per sample: the normalised entropy H at the warm-up step
and the number of total refinement steps that sample needed to reach the target quality (a
header `entropy,steps` is optional; an .npz with arrays `entropy` and `steps` works too). The
command fits steps = k H + b_total by least squares, prints k and b in the convention of
`--entropy_budget` (b = b_total - warmup_steps for 'after_warmup'), the fit's R^2, the mean
budget the fitted map gives these samples after clipping to [min_steps, max_steps], and the
config flags to use.

How to measure the pairs: sample the same indices with several fixed budgets S that share the
warm-up, i.e. adaptive sampling with `entropy_k=0, entropy_b=S, entropy_budget=total` (every
row then runs exactly S steps, and its first warmup_steps steps and H are identical for all
S); `generate` stores H of every image in its PNG (`grn_entropy`) and in samples.npz. Score
every image at every S with the quality measure of your choice (e.g. its distance to the
max-steps sample, or a per-image classifier score) and take the smallest S that reaches the
target as that image's `steps`.
"""

import csv
import os

from absl import app
from absl import flags
import numpy as np

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


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("pairs", None, "CSV (entropy,steps) or npz with arrays entropy, steps.")
  flags.DEFINE_integer("warmup_steps", spec_lib.OFFICIAL_WARMUP_STEPS, "Sampler warm-up steps.")
  flags.DEFINE_enum("entropy_budget", "after_warmup", list(spec_lib.ENTROPY_BUDGETS),
                    "Convention of the printed b (config.sample.entropy_budget).")
  flags.DEFINE_integer("min_steps", 10, "config.sample.min_steps, for the clipped mean budget.")
  flags.DEFINE_integer("max_steps", 50, "config.sample.max_steps, for the clipped mean budget.")


def main(argv):
  del argv
  if not flags.FLAGS.pairs:
    raise app.UsageError("--pairs is required.")
  fl = flags.FLAGS
  entropy, steps = load_pairs(fl.pairs)
  fit = fit_entropy_map(entropy, steps, fl.warmup_steps, fl.entropy_budget)
  offset = fl.warmup_steps if fl.entropy_budget == "after_warmup" else 0
  budget = np.clip(np.round(fit["k"] * entropy + fit["b"]) + offset, fl.min_steps, fl.max_steps)
  print(f"{len(entropy)} pairs: H in [{entropy.min():.4f}, {entropy.max():.4f}], steps in "
        f"[{steps.min():.0f}, {steps.max():.0f}] (mean {steps.mean():.2f})")
  print(f"k = {fit['k']:.6f}, b = {fit['b']:.6f} ({fl.entropy_budget}), R^2 = {fit['r2']:.4f}")
  print(f"mean budget on these samples after clipping to [{fl.min_steps}, {fl.max_steps}]: "
        f"{budget.mean():.2f} steps")
  print(f"flags: --config.sample.adaptive=True --config.sample.entropy_k={fit['k']:.6f} "
        f"--config.sample.entropy_b={fit['b']:.6f} "
        f"--config.sample.entropy_budget={fl.entropy_budget} "
        f"--config.sample.warmup_steps={fl.warmup_steps}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
