"""The sampler's static spec and traced settings: validation, derived bounds, arrays."""

import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.sampling import schedules
from grn_jax.sampling.spec import SamplerSettings, SamplerSpec


def _spec(**kw):
  base = dict(label_shape=(3, 3, 2), label_values=4, hbq_rounds=2, label_mode="ind",
              num_steps=6)
  base.update(kw)
  return SamplerSpec(**base)


def test_spec_validation():
  with pytest.raises(ValueError, match="keep_mode"):
    _spec(keep_mode="best")
  with pytest.raises(ValueError, match="warmup_steps"):
    _spec(adaptive=True, warmup_steps=5, min_steps=4, max_steps=10)
  with pytest.raises(ValueError, match="model_keep_ratio"):
    _spec(model_keep_ratio="measured")
  with pytest.raises(ValueError, match="guidance"):
    _spec(guidance="always")
  with pytest.raises(TypeError, match="Schedule"):
    _spec(schedule="linear")
  with pytest.raises(ValueError, match="label_shape"):
    _spec(label_shape=(4,))
  with pytest.raises(ValueError, match="trace_probs"):
    _spec(trace_probs=True)
  with pytest.raises(ValueError, match="entropy_budget"):
    _spec(entropy_budget="remainder")
  with pytest.raises(ValueError, match="num_steps"):
    _spec(num_steps=0)


def test_bounds_and_settings():
  assert _spec().loop_bound == 6
  adaptive = _spec(adaptive=True, warmup_steps=2, min_steps=4, max_steps=16)
  assert adaptive.loop_bound == 16 and adaptive.entropy_offset == 2
  assert _spec(adaptive=True, warmup_steps=2, min_steps=4, max_steps=16,
               entropy_budget="total").entropy_offset == 0
  # Specs are hashable values: equal specs share one compiled sampler.
  assert hash(_spec(schedule=schedules.official_t2iv(4))) == hash(
      _spec(schedule=schedules.official_t2iv(4)))
  arrays = SamplerSettings(cfg_scale=2, keep_table=np.arange(3)).as_arrays()
  assert arrays.cfg_scale.dtype == jnp.float32 and arrays.keep_table.dtype == jnp.float32
  assert SamplerSettings().as_arrays().keep_table is None
