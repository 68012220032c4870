"""Finding the app's model: a demo workdir (with its saved config), config + params dirs, errors."""

import jax
import numpy as np
import pytest

from grn_jax import checkpointing
from grn_jax.app import loading
from tests.app import tiny


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory):
  """What the test-size demo leaves: checkpoints/ (state and config), grn_params/, tokenizer/."""
  workdir = tmp_path_factory.mktemp("demo")
  config = tiny.tiny_config()
  params, ema = tiny.random_grn_params(config, 0), tiny.random_grn_params(config, 1)
  _, tok_params = tiny.random_tokenizer(config)
  ckpt = checkpointing.TrainCheckpointer(workdir, async_save=False)
  ckpt.save(3, {"params": params, "ema_params": [ema, params]}, {},
            checkpointing.config_to_dict(config))
  ckpt.close()
  checkpointing.save_params(workdir / "tokenizer", tok_params)
  return workdir, config, params, ema, tok_params


def _assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_workdir_loads_with_its_saved_config(demo_workdir):
  workdir, config, _, ema, tok_params = demo_workdir
  loaded = loading.load_workdir(str(workdir))
  # No grn_params/: the training checkpoint's config.sample.params (ema_0).
  _assert_tree_equal(loaded.params, ema)
  _assert_tree_equal(loaded.tok_params, tok_params)
  family_config = loaded.family.config
  assert family_config.model.to_dict() == config.model.to_dict()
  assert family_config.tokenizer.dim_mult == (1, 2, 2, 2)          # JSON lists: tuples again
  assert family_config.tokenizer.checkpoint == str(workdir / "tokenizer")
  assert loaded.family.grid == (2, 2) and "ema_0 of step 3" in loaded.source


def test_workdir_prefers_grn_params_and_files_form(demo_workdir, tmp_path):
  workdir, config, params, _, _ = demo_workdir
  local = tmp_path / "demo"
  local.mkdir()
  (local / "checkpoints").symlink_to(workdir / "checkpoints")
  (local / "tokenizer").symlink_to(workdir / "tokenizer")
  checkpointing.save_params(local / "grn_params", params)
  _assert_tree_equal(loading.load_workdir(str(local)).params, params)
  loaded = loading.load_files(config, checkpoint=str(local / "grn_params"),
                              tokenizer=str(workdir / "tokenizer"))
  _assert_tree_equal(loaded.params, params)
  assert config.sample.checkpoint == ""                            # the caller's config as is


def test_nothing_found_says_how_to_get_a_model(tmp_path, demo_workdir):
  with pytest.raises(loading.ModelNotFoundError) as error:
    loading.load_workdir(str(tmp_path / "nothing"))
  message = str(error.value)
  assert "python -m grn_jax.main --config=configs/demo.py --workdir=/tmp/grn_demo" in message
  assert "hf://bytedance-research/GRN" in message and "--checkpoint=" in message
  config = demo_workdir[1]
  with pytest.raises(loading.ModelNotFoundError, match="pass --checkpoint=DIR"):
    loading.load_files(config)
  with pytest.raises(loading.ModelNotFoundError, match="No params directory at"):
    loading.load_files(config, checkpoint=str(tmp_path / "missing"))


def test_params_of_another_model_fail_naming_the_keys(demo_workdir, tmp_path):
  workdir, config, _, _, _ = demo_workdir
  bigger = tiny.tiny_config()
  bigger.model.hidden_size = 64
  checkpointing.save_params(tmp_path / "other", tiny.random_grn_params(bigger))
  with pytest.raises(ValueError, match="do not match the model"):
    loading.load_files(config, checkpoint=str(tmp_path / "other"),
                       tokenizer=str(workdir / "tokenizer"))
