r"""grn_jax entry point.

  python -m grn_jax.main --config=configs/c2i.py:variant=B --workdir=DIR [--mode=train]
  python -m grn_jax.main --mode=sample --config=configs/c2i.py:variant=B --workdir=DIR
  python -m grn_jax.main --config=configs/demo.py --workdir=DIR        # embedded demo
  python -m grn_jax.main --mode=t2i --config=configs/t2iv.py:task=t2i --prompt="a cat" \
      --workdir=DIR                   # also --mode=t2v|i2v, --prompts=FILE, --image, --trajectory

`config.task` names the model family (today: c2i); `--mode` (default `config.mode`) what to
run. `main(argv)` is importable from a notebook; `run(mode, config, workdir)` is the
plain-Python form of the same thing. Both check every section of the config first, so an unknown
or missing field fails at start-up, naming it.
"""

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go (may be gs://).")
flags.DEFINE_enum("mode", None, ["train", "sample", "demo", "t2i", "t2v", "i2v"],
                  "What to run; default: config.mode.")
flags.DEFINE_string("prompt", None, "t2i/t2v/i2v: one prompt (config.sample.prompt).")
flags.DEFINE_string("prompts", None, "t2i/t2v/i2v: a UTF-8 file, one prompt per line "
                    "(config.sample.prompts).")
flags.DEFINE_string("image", None, "i2v: the first frame (config.sample.image).")
flags.DEFINE_bool("trajectory", None, "t2i/t2v/i2v: also write the refinement animations "
                  "(config.sample.trajectory).")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host TPU pods, multi-process GPU).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("train", "sample", "demo")
# Prompt modes of the T2I/T2V family (configs/t2iv.py), run by grn_jax/sampling/t2iv_run.py.
PROMPT_MODES = ("t2i", "t2v", "i2v")
PROMPT_FLAGS = ("prompt", "prompts", "image", "trajectory")  # -> config.sample.<flag>
TASKS = ("c2i",)
DEMO_SECTIONS = ("tokenizer_train", "demo")  # configs/demo.py only


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the task, the mode and every field of every section (errors name them)."""
  # pylint: disable=g-import-not-at-top
  from grn_jax import config_check
  from grn_jax.demo import run as demo_run
  from grn_jax.trainers import c2i as c2i_trainer
  from grn_jax.trainers import tokenizer as tokenizer_trainer
  # pylint: enable=g-import-not-at-top
  if "task" in config and config.task not in TASKS:
    raise ValueError(f"config.task={config.task!r}: grn_jax.main runs the tasks {TASKS}.")
  c2i_trainer.validate_config(config, extra_sections=DEMO_SECTIONS)
  if config.mode not in MODES:
    raise ValueError(f"config.mode={config.mode!r} must be one of {MODES}.")
  if "tokenizer_train" in config:
    config_check.check_fields(config.tokenizer_train, "tokenizer_train",
                              tokenizer_trainer.TRAIN_FIELDS)
  if "demo" in config:
    config_check.check_fields(config.demo, "demo", demo_run.DEMO_FIELDS)


def run(mode: str | None, config: ml_collections.ConfigDict, workdir: str):
  """Runs one mode (None: config.mode) on a config; returns what that mode returns."""
  if mode in PROMPT_MODES:
    return run_prompt_mode(mode, config, workdir)
  if mode is not None and mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES + PROMPT_MODES}.")
  validate_config(config)
  mode = mode or config.mode
  logging.info("grn_jax %s %s on %d devices (%d processes)", config.task, mode,
               jax.device_count(), jax.process_count())
  if mode == "train":
    from grn_jax.trainers import c2i as trainer  # pylint: disable=g-import-not-at-top
    return trainer.train_and_evaluate(config, workdir)
  if mode == "sample":
    from grn_jax.sampling import generate  # pylint: disable=g-import-not-at-top
    return generate.generate_to_workdir(config, workdir)
  from grn_jax import demo  # pylint: disable=g-import-not-at-top
  return demo.run_demo(config, workdir)


def run_prompt_mode(mode: str, config: ml_collections.ConfigDict, workdir: str):
  """t2i | t2v | i2v: prompts to images or videos (grn_jax/sampling/t2iv_run.py)."""
  from grn_jax.sampling import t2iv_run  # pylint: disable=g-import-not-at-top
  return t2iv_run.run(mode, config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.distributed:
    jax.distributed.initialize()
  config = FLAGS.config
  given = [name for name in PROMPT_FLAGS if FLAGS[name].value is not None]
  if given and FLAGS.mode not in PROMPT_MODES:
    raise app.UsageError(f"--{given[0]} goes with --mode={'|'.join(PROMPT_MODES)}.")
  for name in given:  # the fields exist in configs/t2iv.py: a locked config accepts them
    config.sample[name] = FLAGS[name].value
  run(FLAGS.mode, config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
