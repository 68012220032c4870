"""Keep-ratio schedules and the stretched adaptive grid: golden values."""

import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.sampling import schedules


def test_schedules_golden_values():
  u = jnp.array([0.0, 0.25, 0.5, 1.0])
  np.testing.assert_allclose(schedules.keep_ratio(u, "linear"), [0, .25, .5, 1])
  np.testing.assert_allclose(schedules.keep_ratio(u, "cosine"),
                             [0, 1 - np.cos(np.pi / 8), 1 - np.cos(np.pi / 4), 1], atol=1e-7)
  # shift 4: 1 - 4 (1-u) / (1 + 3 (1-u)); u = .5 -> 1 - 2 / 2.5 = 0.2
  np.testing.assert_allclose(schedules.keep_ratio(u, "shifted", 4.0), [0, 1 - 3 / 3.25, .2, 1],
                             atol=1e-7)
  np.testing.assert_allclose(schedules.keep_ratio(u, "shifted", 1.0), u)
  # Official C2I grid: t_i = linspace(0, 1, S + 1).
  np.testing.assert_allclose(schedules.progress(jnp.arange(51), 50, 50, 5),
                             np.linspace(0, 1, 51), atol=1e-6)
  # Stretched: warm-up 5 of base 50, budget 15 -> u_10 = .1 + .9 * 5 / 10 = .55.
  np.testing.assert_allclose(schedules.progress(jnp.array([5, 10, 15]), 15, 50, 5),
                             [.1, .55, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match="schedule"):
    schedules.keep_ratio(u, "cosinus")
