"""Keep-ratio schedules, the stretched adaptive grid, the official T2I/T2V grid: golden values."""

import jax
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


def test_cosine_is_accurate_at_small_keep_ratios():
  # The first steps of the T2I/T2V grid: relative error of float32, not absolute.
  u = np.array([1e-3, 1e-2, 2e-2], np.float64)
  exact = 1 - np.cos(np.pi / 2 * u)
  np.testing.assert_allclose(schedules.keep_ratio(jnp.asarray(u, jnp.float32), "cosine"),
                             exact, rtol=1e-6)


def test_official_t2iv_schedule_and_host_table():
  # next_pt(i) = 0.999 (1 - cos(pi/2 shift(min(1, (i + 1) / (Tmax - 1)), a))), Tmax = 50.
  schedule = schedules.official_t2iv(50)
  assert (schedule.grid_steps, schedule.max_keep, schedule.final_keep_all) == (49, 0.999, False)
  steps = np.arange(50)
  for shift in (1.0, 3.0):
    u = np.minimum(1.0, (steps + 1) / 49)
    noise = 1 - u
    shifted = 1 - shift * noise / (1 + (shift - 1) * noise)
    reference = (1 - np.cos(np.pi / 2 * shifted)) * 0.999
    table = schedule.host_table(50, shift)
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table, reference.astype(np.float32))  # float64, rounded once
    in_graph = schedule.keep_ratio_at(jnp.asarray(steps + 1), jnp.full((50,), 50), 50, 5, shift)
    np.testing.assert_allclose(in_graph, reference, rtol=2e-6, atol=1e-7)
  assert table[-1] == np.float32(0.999) and table[48] == table[49]  # capped, flat after Tmax - 1
  # The C2I default: u reaches 1 at the budget, no cap; its host table is linspace(0, 1)[1:].
  np.testing.assert_allclose(schedules.Schedule().host_table(4, 1.0), [.25, .5, .75, 1.0])
  # Budgets 4 (= base) and 7 after a warm-up of 1: u_2 = 2 / 4 and 1 / 4 + 3 / 4 * 1 / 6.
  np.testing.assert_allclose(schedules.Schedule().keep_ratio_at(jnp.array(2), jnp.array([4, 7]),
                                                                4, 1, 1.0), [.5, .375])
  with pytest.raises(ValueError, match="Tmax"):
    schedules.official_t2iv(1)
  with pytest.raises(ValueError, match="max_keep"):
    schedules.Schedule(max_keep=1.5)
  with pytest.raises(ValueError, match="sample.schedule"):
    schedules.Schedule(kind="cosinus")


def test_exact_table_rounds_the_float64_schedule_once_for_a_traced_shift():
  # The official code compares float32 uniforms with its float64 schedule (rounded to float32):
  # the in-graph double-float table must give those very float32 values for a traced shift,
  # where plain float32 arithmetic is off by an ulp at many steps.
  compiled = {}
  plain_mismatches = 0
  for tmax, steps in ((4, 3), (50, 50), (17, 60)):
    for kind_schedule in (schedules.official_t2iv(tmax), schedules.Schedule(kind="shifted")):
      table = jax.jit(lambda a, s=kind_schedule, n=steps: s.exact_table(n, a))
      for shift in (0.5, 1.0, 1.3, 3.0, 7.37):
        shift32 = np.float32(shift)
        want = kind_schedule.host_table(steps, float(shift32))
        np.testing.assert_array_equal(table(shift32), want)
        plain = kind_schedule.keep_ratio_at(jnp.arange(1, steps + 1), jnp.full((steps,), steps),
                                            steps, 0, shift32)
        plain_mismatches += int((np.asarray(plain) != want).sum())
      compiled[tmax, kind_schedule.kind] = table._cache_size()  # pylint: disable=protected-access
  assert set(compiled.values()) == {1}  # the shift is traced: one program per table
  assert plain_mismatches > 0
