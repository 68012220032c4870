"""The config files: every variant builds, every field is known to a validator, arguments.

(grn_jax.main defines absl flags on import, as do other command lines: its checks are tested in
a subprocess, tests/test_main.py.)"""

import pytest

from configs import c2i as c2i_configs
from configs import common
from configs import demo as demo_configs
from configs import tokenizer as tokenizer_configs
from grn_jax.demo import run as demo_run
from grn_jax.models import tokenizer as tokenizer_model
from grn_jax.demo import train as demo_train
from grn_jax.trainers import c2i as c2i_trainer
from grn_jax.trainers import tokenizer as tokenizer_trainer

C2I_ARGS = ["variant=B", "variant=L", "variant=H", "variant=G", "variant=tiny",
            "variant=B,label_mode=bit", None]
SECTIONS = ("model", "tokenizer", "data", "train", "optim", "corruption", "sample", "eval",
            "mesh")


@pytest.mark.parametrize("arg", C2I_ARGS)
def test_every_c2i_variant_builds_and_every_field_is_known(arg):
  config = c2i_configs.get_config(arg)
  assert config.task == "c2i" and config.mode == "train"
  c2i_trainer.validate_config(config)


@pytest.mark.parametrize("size", ["default", "test"])
def test_demo_configs_build_and_every_field_is_known(size):
  config = demo_configs.get_config(f"size={size}")
  c2i_trainer.validate_config(config, extra_sections=("tokenizer_train", "demo"))
  demo_run.validate_demo_config(config)
  demo_train.validate_tokenizer_sections(config)
  tokenizer_trainer.validate_config(demo_train.tokenizer_config(config))
  c2i_trainer.validate_config(demo_train.grn_config(config))
  assert config.mode == "demo"


@pytest.mark.parametrize("variant", ["image16", "video64", "tiny"])
def test_tokenizer_configs_are_tokenizer_task_configs(variant):
  config = tokenizer_configs.get_config(f"variant={variant}")
  assert config.task == "tokenizer" and config.mode == "train"
  tokenizer_model.validate_tokenizer_config(config.tokenizer)
  tokenizer_trainer.validate_config(config)
  assert config.tokenizer.checkpoint == tokenizer_configs.CHECKPOINTS.get(variant, "")


@pytest.mark.parametrize("section", SECTIONS + ("",))
def test_unknown_and_missing_fields_fail_naming_them(section):
  config = c2i_configs.get_config("variant=tiny")
  target = config[section] if section else config
  target.bogus_field = 1
  where = f"config.{section}" if section else "config"
  with pytest.raises(ValueError, match=rf"{where}: .*unknown fields \['bogus_field'\]"):
    c2i_trainer.validate_config(config)
  config = c2i_configs.get_config("variant=tiny")
  target = config[section] if section else config
  first = sorted(target.keys())[0]
  del target[first]
  with pytest.raises(ValueError, match=rf"{where}: missing fields \['{first}'\]"):
    c2i_trainer.validate_config(config)


def test_bad_task_and_attention_impl_fail_at_start():
  config = c2i_configs.get_config("variant=tiny")
  config.task = "t2x"
  with pytest.raises(ValueError, match="config.task='t2x'"):
    c2i_trainer.validate_config(config)
  config = c2i_configs.get_config("variant=tiny")
  config.model.attention_impl = "flash"
  with pytest.raises(ValueError, match="config.model.attention_impl must be one of"):
    c2i_trainer.validate_config(config)


def test_parse_arg_defaults_overrides_and_errors():
  defaults = dict(variant="B", label_mode="ind")
  assert common.parse_arg(None, defaults) == defaults
  assert common.parse_arg("", defaults) == defaults
  assert common.parse_arg(" label_mode = bit ", defaults) == dict(variant="B", label_mode="bit")
  assert common.parse_arg("variant=tiny,label_mode=bit", defaults) == dict(variant="tiny",
                                                                           label_mode="bit")
  with pytest.raises(ValueError, match=r"unknown config arguments \['size', 'varient'\]; known: "
                                       r"variant, label_mode"):
    common.parse_arg("varient=B,size=test", defaults)
  with pytest.raises(ValueError, match="'tiny' must look like key=value"):
    common.parse_arg("tiny", defaults)
  with pytest.raises(ValueError, match="unknown variant 'XL'"):
    c2i_configs.get_config("variant=XL")
  with pytest.raises(ValueError, match="unknown tokenizer variant 'image8'"):
    tokenizer_configs.get_config("variant=image8")


def test_shared_sections_are_one_definition():
  c2i, demo = c2i_configs.get_config(), demo_configs.get_config()
  assert c2i.mesh.to_dict() == common.mesh_config().to_dict() == dict(data=-1, fsdp=1, tensor=1)
  assert c2i.sharding_rules == demo.sharding_rules == common.sharding_rules()
  assert c2i.tokenizer.to_dict() == tokenizer_configs.tokenizer_config("image16").to_dict()
  assert c2i_configs.get_config("variant=tiny").tokenizer.to_dict() == (
      tokenizer_configs.tokenizer_config("tiny").to_dict())


def test_demo_config_is_consistent_and_rejects_unknown_arguments():
  config = demo_configs.get_config()
  assert config.mode == "demo" and config.data.source == "arrays"
  assert config.data.image_size == 16 * config.model.input_size
  assert config.tokenizer.latent_dim == config.model.latent_dim
  with pytest.raises(ValueError, match="size"):
    demo_configs.get_config("size=huge")
  with pytest.raises(ValueError, match="unknown config arguments"):
    demo_configs.get_config("variant=B")
