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
