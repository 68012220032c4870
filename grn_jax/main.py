r"""grn_jax entry point.

  python -m grn_jax.main --config=configs/c2i.py:variant=B --workdir=DIR [--mode=train]
  python -m grn_jax.main --mode=sample --config=configs/c2i.py:variant=B --workdir=DIR
  python -m grn_jax.main --config=configs/demo.py --workdir=DIR        # embedded demo

`main(argv)` is importable from a notebook; `run(mode, config, workdir)` is the plain-Python
form of the same thing.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go (may be gs://).")
flags.DEFINE_enum("mode", None, ["train", "sample", "demo"],
                  "What to run; default: config.mode if the config has one, else train.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host TPU pods, multi-process GPU).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("train", "sample", "demo")


def run(mode: str, config, workdir: str):
  """Runs one mode on a config; returns what that mode returns (final state, paths, ...)."""
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}.")
  if mode == "train":
    from grn_jax.trainers import c2i as trainer  # pylint: disable=g-import-not-at-top
    return trainer.train_and_evaluate(config, workdir)
  if mode == "sample":
    from grn_jax.sampling import generate  # pylint: disable=g-import-not-at-top
    return generate.generate_to_workdir(config, workdir)
  from grn_jax import demo  # pylint: disable=g-import-not-at-top
  return demo.run_demo(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.distributed:
    jax.distributed.initialize()
  config = FLAGS.config
  mode = FLAGS.mode or config.get("mode", "train")
  logging.info("grn_jax %s on %d devices (%d processes)", mode, jax.device_count(),
               jax.process_count())
  run(mode, config, FLAGS.workdir)


if __name__ == "__main__":
  app.run(main)
