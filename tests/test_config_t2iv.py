"""configs/t2iv.py: every variant and task builds a model section the validator accepts, the
official pipeline defaults, the tokenizer matches the model, argument errors."""

import pytest

from configs import t2iv as t2iv_configs
from grn_jax import resolution
from grn_jax.models import grn_t2iv


@pytest.mark.parametrize("variant", sorted(t2iv_configs.VARIANTS))
@pytest.mark.parametrize("task", ["t2i", "t2v"])
def test_every_variant_builds(variant, task):
  config = t2iv_configs.get_config(f"variant={variant},task={task}")
  assert config.task == task
  grn_t2iv.validate_t2iv_config(config.model)
  assert config.tokenizer.latent_dim == config.model.latent_dim
  assert set(config.model) == set(grn_t2iv.MODEL_FIELDS + grn_t2iv.SWITCH_FIELDS) | {"name"}
  assert resolution.latent_grid(config.sample.h_div_w, config.sample.pixels)


def test_official_pipeline_defaults():
  t2i = t2iv_configs.get_config("task=t2i").sample
  assert (t2i.cfg_scale, t2i.temperature, t2i.pixels, t2i.h_div_w, t2i.duration) == (
      3.0, 1.1, "1M", 1.0, 0.0)
  t2v = t2iv_configs.get_config("task=t2v").sample
  assert (t2v.cfg_scale, t2v.temperature, t2v.pixels, t2v.h_div_w, t2v.duration) == (
      4.0, 1.0, "0.41M", 9 / 16, 2.0)
  for sample in (t2i, t2v):
    assert (sample.num_steps, sample.schedule_tmax, sample.snr_shift, sample.cfg_interval) == (
        50, 50, 1.0, 0.0)
  model = t2iv_configs.get_config().model
  assert (model.hidden_size, model.depth, model.num_heads, model.num_kv_heads,
          model.block_chunks, model.text_dim) == (2304, 28, 18, 18, 7, 4096)


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="variant"):
    t2iv_configs.get_config("variant=3B")
  with pytest.raises(ValueError, match="task must be"):
    t2iv_configs.get_config("task=i2v")
  with pytest.raises(ValueError, match="unknown config arguments"):
    t2iv_configs.get_config("size=2B")
