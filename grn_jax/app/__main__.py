r"""The web app: generate and edit with GRN in the browser (Gradio).

  python -m grn_jax.app                                  # the demo of README command 1
  python -m grn_jax.app --workdir=DIR                    # another demo / training workdir
  python -m grn_jax.app --config=configs/c2i.py:variant=B --checkpoint=$HOME/grn/GRN_B \
      --tokenizer=$HOME/grn/HBQ16                        # converted released models
  [--host=127.0.0.1 --port=7860 --num_samples=4 --scale=0]

then open http://127.0.0.1:7860. Needs the `app` extra (`pip install -e '.[app]'`).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from grn_jax import platform

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "A config file (with --checkpoint, "
                                "--tokenizer); default: the workdir's saved config.",
                                lock_config=False)
flags.DEFINE_string("workdir", None, "A demo or training workdir (default /tmp/grn_demo, "
                    "where README command 1 writes the digits demo).")
flags.DEFINE_string("checkpoint", "", "With --config: the GRN params directory (else "
                    "config.sample.checkpoint).")
flags.DEFINE_string("tokenizer", "", "With --config: the tokenizer params directory (else "
                    "config.tokenizer.checkpoint).")
flags.DEFINE_string("host", "127.0.0.1", "Address to serve on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 7860, "Port to serve on.")
flags.DEFINE_integer("num_samples", 4, "Images per click.")
flags.DEFINE_integer("scale", 0, "Nearest upscaling of the images shown (0: at least 256 "
                     "pixels wide).")


def main(argv):
  platform.configure_xla()  # before jax starts a backend
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
  if not FLAGS["verbosity"].present:  # checkpoint and HTTP logs only when asked (--verbosity=0)
    logging.set_verbosity(logging.WARNING)
  # pylint: disable=g-import-not-at-top
  from grn_jax.app import loading
  from grn_jax.app import ui
  from grn_jax.app.engine import Engine
  # pylint: enable=g-import-not-at-top
  if FLAGS.config is not None and FLAGS.workdir:
    raise app.UsageError("pass --workdir or --config (with --checkpoint, --tokenizer), not both.")
  try:
    if FLAGS.config is not None:
      loaded = loading.load_files(FLAGS.config, FLAGS.checkpoint, FLAGS.tokenizer)
    else:
      loaded = loading.load_workdir(FLAGS.workdir or loading.DEFAULT_WORKDIR)
  except loading.ModelNotFoundError as e:
    print(e, file=sys.stderr)
    sys.exit(1)
  print(f"model: {loaded.source}", flush=True)
  engine = Engine(loaded.family, loaded.params, loaded.tok_module, loaded.tok_params,
                  num_samples=FLAGS.num_samples)
  ui.App(engine, scale=FLAGS.scale).build().launch(server_name=FLAGS.host,
                                                   server_port=FLAGS.port)


def run_cli() -> None:
  """Console script `grn-app` (= python -m grn_jax.app)."""
  app.run(main)


if __name__ == "__main__":
  run_cli()
