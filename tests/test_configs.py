"""The config files: variants, arguments, consistency."""

import pytest

from configs import demo as demo_configs


def test_demo_config_is_consistent_and_rejects_unknown_arguments():
  config = demo_configs.get_config()
  assert config.mode == "demo" and config.data.source == "arrays"
  assert config.data.image_size == 16 * config.model.input_size
  assert config.tokenizer.latent_dim == config.model.latent_dim
  with pytest.raises(ValueError, match="size"):
    demo_configs.get_config("size=huge")
  with pytest.raises(ValueError, match="unknown config arguments"):
    demo_configs.get_config("variant=B")
