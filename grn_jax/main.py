r"""grn_jax entry point.

  python -m grn_jax.main --config=configs/c2i.py:variant=B --workdir=DIR [--mode=train]
  python -m grn_jax.main --mode=sample --config=configs/c2i.py:variant=B --workdir=DIR
  python -m grn_jax.main --config=configs/demo.py --workdir=DIR        # embedded demo
  python -m grn_jax.main --mode=t2i --config=configs/t2iv.py:task=t2i --prompt="a cat" \
      --workdir=DIR                   # also --mode=t2v|i2v, --prompts=FILE, --image, --trajectory

  python -m grn_jax.main --config=configs/tokenizer.py:variant=tiny --workdir=DIR   # tokenizer
  python -m grn_jax.main --mode=sample --config=configs/c2i.py:variant=B --workdir=DIR \
      --pretrained=GRN_ind_B --trust_pickle     # the released model (grn_jax/pretrained.py)
  python -m grn_jax.main --config=... --workdir=DIR --profile_steps=5   # trace, TensorBoard

`config.task` names the model family: --mode=train runs its task in the one training loop
(grn_jax/trainers/loop.py; the TASKS registry of grn_jax/trainers/task.py: c2i, tokenizer, t2i,
t2v); sample and demo run the C2I family, t2i|t2v|i2v the T2I/T2V family. `--mode` defaults to `config.mode`. `main(argv)` is importable from a notebook;
`run(mode, config, workdir)` is the plain-Python form of the same thing. Both check every section
of the config first, so an unknown or missing field fails at start-up, naming it.
`--pretrained=NAME` fetches a released model (and its tokenizer) into the user cache once and
points the config at it (grn_jax/pretrained.py `apply_to_config`). The command line turns on
the persistent compilation cache (grn_jax/user_cache.py).

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

from grn_jax import platform
from grn_jax import preemption

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
flags.DEFINE_string("pretrained", None, "A released model (python -m grn_jax.pretrained --list) "
                    "to sample from (--mode=sample) or start training from, with its tokenizer.")
flags.DEFINE_bool("trust_pickle", False, "With --pretrained: allow the full unpickle the "
                  "released C2I file needs (read once, then cached as Orbax).")
flags.DEFINE_integer("profile_steps", 0, "--mode=train: trace this many steps (from the second "
                     "one) with jax.profiler into WORKDIR/plugins/profile; view them in "
                     "TensorBoard's Profile tab (tensorboard --logdir=WORKDIR).")
flags.mark_flags_as_required(["config", "workdir"])

MODES = ("train", "sample", "demo")
# Prompt modes of the T2I/T2V family (configs/t2iv.py), run by grn_jax/sampling/t2iv_run.py.
PROMPT_MODES = ("t2i", "t2v", "i2v")
PROMPT_FLAGS = ("prompt", "prompts", "image", "trajectory")  # -> config.sample.<flag>
SAMPLING_TASKS = ("c2i",)  # the families --mode=sample and --mode=demo run
DEMO_SECTIONS = ("tokenizer_train", "demo")  # configs/demo.py only
# The text demos (configs/demo_t2i.py, demo_t2v.py): --mode=demo of the T2I/T2V tasks.
TEXT_DEMOS = {"t2i": "grn_jax.demo.t2i:run_t2i_demo", "t2v": "grn_jax.demo.t2v:run_t2v_demo"}


def validate_config(config: ml_collections.ConfigDict, mode: str | None = None) -> None:
  """Checks the task, the mode (None: config.mode) and every field of every section (errors
  name them)."""
  # pylint: disable=g-import-not-at-top
  from grn_jax import config_check
  from grn_jax.trainers import task as task_lib
  # pylint: enable=g-import-not-at-top
  if "task" not in config:
    raise ValueError(f"config.task is missing; set it to one of {tuple(task_lib.TASKS)}.")
  if config.task in TEXT_DEMOS and "demo" in config:
    from grn_jax.demo import text_demo  # pylint: disable=g-import-not-at-top
    if (mode or config.mode) != "demo":
      raise ValueError("a text demo config (configs/demo_t2i.py, demo_t2v.py) runs with "
                       "--mode=demo (its config.mode).")
    return text_demo.validate_config(config, text_demo.demo_fields(config.task))
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


def run(mode: str | None, config: ml_collections.ConfigDict, workdir: str,
        profile_steps: int = 0):
  """Runs one mode (None: config.mode) on a config; returns what that mode returns.

  profile_steps > 0 (train only) traces that many steps with jax.profiler (loop.fit).

  Raises:
    grn_jax.preemption.Interrupted: a stop signal ended the run early, after it saved its work.
  """
  if mode in PROMPT_MODES:
    if profile_steps > 0:
      raise ValueError(f"--profile_steps traces training steps; --mode={mode} does not train.")
    return run_prompt_mode(mode, config, workdir)
  if mode is not None and mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; choose from {MODES + PROMPT_MODES}.")
  validate_config(config, mode)
  mode = mode or config.mode
  if profile_steps > 0 and mode != "train":
    raise ValueError(f"--profile_steps traces training steps; --mode={mode} does not train.")
  logging.info("grn_jax %s %s on %d devices (%d processes)", config.task, mode,
               jax.device_count(), jax.process_count())
  if mode == "train":
    from grn_jax.trainers import loop  # pylint: disable=g-import-not-at-top
    return loop.fit(config, workdir, profile_steps=profile_steps).raise_if_stopped(workdir)
  if mode == "sample":
    from grn_jax.sampling import generate  # pylint: disable=g-import-not-at-top
    return generate.generate_to_workdir(config, workdir)
  if "demo" not in config:
    raise ValueError("--mode=demo runs the digits demo: use --config=configs/demo.py.")
  if config.task in TEXT_DEMOS:
    import importlib  # pylint: disable=g-import-not-at-top
    module, function = TEXT_DEMOS[config.task].split(":")
    return getattr(importlib.import_module(module), function)(config, workdir)
  from grn_jax import demo  # pylint: disable=g-import-not-at-top
  return demo.run_demo(config, workdir)


def run_prompt_mode(mode: str, config: ml_collections.ConfigDict, workdir: str):
  """t2i | t2v | i2v: prompts to images or videos (grn_jax/sampling/t2iv_run.py)."""
  from grn_jax.sampling import t2iv_run  # pylint: disable=g-import-not-at-top
  return t2iv_run.run(mode, config, workdir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  platform.configure_xla()  # before jax starts a backend
  if FLAGS.distributed:
    jax.distributed.initialize()
  # pylint: disable=g-import-not-at-top
  from grn_jax import pretrained
  from grn_jax import user_cache
  # pylint: enable=g-import-not-at-top
  user_cache.enable_compilation_cache()
  config = FLAGS.config
  given = [name for name in PROMPT_FLAGS if FLAGS[name].value is not None]
  if given and FLAGS.mode not in PROMPT_MODES:
    raise app.UsageError(f"--{given[0]} goes with --mode={'|'.join(PROMPT_MODES)}.")
  for name in given:  # the fields exist in configs/t2iv.py: a locked config accepts them
    config.sample[name] = FLAGS[name].value
  if FLAGS.pretrained:
    for line in pretrained.apply_to_config(config, FLAGS.pretrained, FLAGS.mode or config.mode,
                                           trust_pickle=FLAGS.trust_pickle):
      logging.info("--pretrained=%s: %s", FLAGS.pretrained, line)
  try:
    run(FLAGS.mode, config, FLAGS.workdir, profile_steps=FLAGS.profile_steps)
  except preemption.Interrupted as e:
    logging.warning("%s", e)
    print(f"grn_jax: {e}", file=sys.stderr)
    sys.exit(e.exit_code)


def run_cli() -> None:
  """Console script `grn-train` (= python -m grn_jax.main)."""
  app.run(main)


def run_sample_cli() -> None:
  """Console script `grn-sample`: python -m grn_jax.main with --mode defaulting to sample."""
  FLAGS.set_default("mode", "sample")
  app.run(main)


if __name__ == "__main__":
  run_cli()
