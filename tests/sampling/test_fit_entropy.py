"""Fitting the entropy -> steps map (and its command line)."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.sampling import fit_entropy
from grn_jax.sampling import refine
from grn_jax.sampling.spec import SamplerSettings, SamplerSpec


def test_fit_entropy_map_recovers_known_constants(tmp_path):
  h = np.array([0.61, 0.66, 0.72, 0.77, 0.83, 0.88, 0.9])  # no .5 ties in 30 h
  steps = 30.0 * h + 2.0
  fit = fit_entropy.fit_entropy_map(h, steps, warmup_steps=5, entropy_budget="after_warmup")
  assert fit["k"] == pytest.approx(30.0) and fit["b"] == pytest.approx(-3.0)
  assert fit["r2"] == pytest.approx(1.0)
  fit = fit_entropy.fit_entropy_map(h, steps, entropy_budget="total")
  assert fit["b"] == pytest.approx(2.0)
  # The fitted map reproduces the steps through the sampler's own budget function.
  spec = SamplerSpec(label_shape=(1, 1, 1), label_values=2, hbq_rounds=1, label_mode="ind",
                     adaptive=True, warmup_steps=5, min_steps=10, max_steps=50)
  settings = SamplerSettings(entropy_k=30.0, entropy_b=-3.0).as_arrays()
  np.testing.assert_array_equal(refine.budget_from_entropy(jnp.asarray(h), spec, settings),
                                np.clip(np.round(steps), 10, 50))
  with pytest.raises(ValueError, match="two different entropies"):
    fit_entropy.fit_entropy_map([0.5, 0.5], [10, 20])
  with pytest.raises(ValueError, match="normalised"):
    fit_entropy.fit_entropy_map([0.5, 1.5], [10, 20])
  csv = tmp_path / "pairs.csv"
  csv.write_text("entropy,steps\n" + "".join(f"{a},{b}\n" for a, b in zip(h, steps)))
  loaded = fit_entropy.load_pairs(str(csv))
  np.testing.assert_allclose(loaded[0], h)
  np.testing.assert_allclose(loaded[1], steps)
  result = subprocess.run([sys.executable, "-m", "grn_jax.sampling.fit_entropy",
                           f"--pairs={csv}", "--warmup_steps=5"], capture_output=True,
                          text=True, check=True)
  assert "k = 30.000000, b = -3.000000 (after_warmup)" in result.stdout
  assert "--config.sample.entropy_k=30.000000" in result.stdout


def _c2i_run(out_dir, steps, entropy, images):
  """An output directory as generate writes it: generation.json and PNGs with text chunks."""
  from grn_jax.sampling import outputs
  out_dir.mkdir()
  (out_dir / "generation.json").write_text(
      '{"task": "c2i", "sample": {"warmup_steps": 5}, "seed": 0}')
  for i, (h, image) in enumerate(zip(entropy, images)):
    outputs.save_png(outputs.png_path(str(out_dir), i), image,
                     dict(grn_label=i, grn_steps=steps, grn_entropy=float(h)))


def test_pairs_from_c2i_runs_take_the_smallest_budget_within_tolerance(tmp_path):
  rng = np.random.default_rng(0)
  final = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
  h = [0.6, 0.7, 0.8, 0.9]
  # Output i is off by `offsets[s][i]` grey levels at budget s (0 = equal to the 50-step one).
  offsets = {10: [0, 40, 40, 40], 20: [0, 5, 40, 40], 30: [0, 0, 5, 40], 50: [0, 0, 0, 0]}
  runs = []
  for s, off in offsets.items():
    images = np.clip(final.astype(int) + np.asarray(off)[:, None, None, None], 0, 255)
    _c2i_run(tmp_path / f"s{s}", s, h, images.astype(np.uint8))
    runs.append(str(tmp_path / f"s{s}"))
  measured = fit_entropy.pairs_from_runs(runs, tolerance=10 / 255)
  np.testing.assert_array_equal(measured["steps"], [10, 20, 30, 50])
  np.testing.assert_allclose(measured["entropy"], h)
  assert measured["family"] == "c2i" and measured["warmup_steps"] == 5
  assert measured["distance"][3].max() == 0 and measured["distance"][0, 1] > 10 / 255
  pairs = tmp_path / "pairs.csv"
  result = subprocess.run([sys.executable, "-m", "grn_jax.sampling.fit_entropy",
                           f"--runs={','.join(runs)}", "--tolerance=0.0392",
                           f"--pairs_out={pairs}", "--entropy_budget=total"],
                          capture_output=True, text=True, check=True)
  fit = fit_entropy.fit_entropy_map(h, [10, 20, 30, 50], entropy_budget="total")
  assert f"k = {fit['k']:.6f}, b = {fit['b']:.6f} (total)" in result.stdout
  assert "--config.sample.entropy_budget=total" in result.stdout
  np.testing.assert_allclose(fit_entropy.load_pairs(str(pairs))[1], [10, 20, 30, 50])
  (tmp_path / "s20" / "000002.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="output 2 of .*s20 cannot be read"):
    fit_entropy.pairs_from_runs(runs, tolerance=0.1)
  with pytest.raises(ValueError, match="at least two"):
    fit_entropy.pairs_from_runs(runs[:1], tolerance=0.1)
  with pytest.raises(FileNotFoundError, match="generation.json"):
    fit_entropy.pairs_from_runs([runs[0], str(tmp_path)], tolerance=0.1)
