r"""grn_jax entry point.

  python -m grn_jax.main --config=configs/c2i.py:variant=B --workdir=DIR [--mode=train]
  python -m grn_jax.main --mode=sample --config=configs/c2i.py:variant=B --workdir=DIR
  python -m grn_jax.main --config=configs/demo.py --workdir=DIR        # embedded demo

  python -m grn_jax.main --config=configs/tokenizer.py:variant=tiny --workdir=DIR   # tokenizer

`config.task` names the model family: --mode=train runs its task in the one training loop
(grn_jax/trainers/loop.py; the TASKS registry of grn_jax/trainers/task.py knows c2i and
tokenizer); sample and demo run the
C2I family. `--mode` defaults to `config.mode`. `main(argv)` is importable from a notebook;
`run(mode, config, workdir)` is the plain-Python form of the same thing. Both check every section
of the config first, so an unknown or missing field fails at start-up, naming it.

Exit status: 0 when the mode finished; EXIT_INTERRUPTED (75) when SIGTERM or SIGINT stopped
it early after saving its work (training: a checkpoint; sampling: every finished image; run()
raises grn_jax.preemption.Interrupted instead): running the same command again resumes; 1 for
an error.
"""

import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from grn_jax import preemption

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go (may be gs://).")
flags.DEFINE_enum("mode", None, ["train", "sample", "demo"],
                  "What to run; default: config.mode.")
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() (multi-host TPU pods, multi-process GPU).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("train", "sample", "demo")
SAMPLING_TASKS = ("c2i",)  # the families --mode=sample and --mode=demo run
DEMO_SECTIONS = ("tokenizer_train", "demo")  # configs/demo.py only


def validate_config(config: ml_collections.ConfigDict, mode: str | None = None) -> None:
  """Checks the task, the mode (None: config.mode) and every field of every section (errors
  name them)."""
  # pylint: disable=g-import-not-at-top
  from grn_jax import config_check
  from grn_jax.trainers import task as task_lib
  # pylint: enable=g-import-not-at-top
  if "task" not in config:
    raise ValueError(f"config.task is missing; set it to one of {tuple(task_lib.TASKS)}.")
  task_cls = task_lib.task_class(config.task)
  task_cls.validate_config(config, extra_sections=DEMO_SECTIONS if config.task == "c2i" else ())
  if config.mode not in MODES:
    raise ValueError(f"config.mode={config.mode!r} must be one of {MODES}.")
  mode = mode or config.mode
  if mode != "train" and config.task not in SAMPLING_TASKS:
    raise ValueError(f"mode {mode!r} runs the tasks {SAMPLING_TASKS}; config.task="
                     f"{config.task!r} only trains (--mode=train).")
  if "tokenizer_train" in config:
    from grn_jax.demo import train as demo_train  # pylint: disable=g-import-not-at-top
    demo_train.validate_tokenizer_sections(config)
  if "demo" in config:
    from grn_jax.demo import run as demo_run  # pylint: disable=g-import-not-at-top
    config_check.check_fields(config.demo, "demo", demo_run.DEMO_FIELDS)


def run(mode: str | None, config: ml_collections.ConfigDict, workdir: str):
  """Runs one mode (None: config.mode) on a config; returns what that mode returns.

  Raises:
    grn_jax.preemption.Interrupted: a stop signal ended the run early, after it saved its work.
  """
  if mode is not None and mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES}.")
  validate_config(config, mode)
  mode = mode or config.mode
  logging.info("grn_jax %s %s on %d devices (%d processes)", config.task, mode,
               jax.device_count(), jax.process_count())
  if mode == "train":
    from grn_jax.trainers import loop  # pylint: disable=g-import-not-at-top
    return loop.fit(config, workdir).raise_if_stopped(workdir)
  if mode == "sample":
    from grn_jax.sampling import generate  # pylint: disable=g-import-not-at-top
    return generate.generate_to_workdir(config, workdir)
  if "demo" not in config:
    raise ValueError("--mode=demo runs the digits demo: use --config=configs/demo.py.")
  from grn_jax import demo  # pylint: disable=g-import-not-at-top
  return demo.run_demo(config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.distributed:
    jax.distributed.initialize()
  try:
    run(FLAGS.mode, FLAGS.config, FLAGS.workdir)
  except preemption.Interrupted as e:
    logging.warning("%s", e)
    print(f"grn_jax: {e}", file=sys.stderr)
    sys.exit(e.exit_code)


if __name__ == "__main__":
  app.run(main)
