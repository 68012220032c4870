r"""python -m grn_jax.aot: compile a config's program for a TPU topology, print its memory.

  python -m grn_jax.aot --config=configs/c2i.py:variant=B --topology=v5p-64 \
      --config.model.dtype=bfloat16 --config.model.scan_layers=True [--program=train] \
      [--num_slices=1] [--batch=0] [--json=PATH]

Runs on any host with the libtpu wheel (no TPU): JAX runs on the CPU, the programs are compiled
by the TPU compiler for the devices of the topology (see grn_jax/aot/__init__.py).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before jax starts: never look for a TPU here

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from grn_jax import aot
from grn_jax.aot import topology as topology_lib
from grn_jax.sampling import outputs
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file("config", None, "ml_collections config file.",
                                  lock_config=True)
  flags.DEFINE_string("topology", None, "Cloud TPU accelerator type per slice, e.g. v5p-64, "
                      "v5e-256, v6e-64.")
  flags.DEFINE_integer("num_slices", 1, "Slices of --topology (> 1: multi-slice, hybrid mesh).")
  flags.DEFINE_enum("program", "train", list(aot.PROGRAMS), "Which program of the config.")
  flags.DEFINE_integer("batch", 0, "Rows of a sample / decode / encode_text / denoise call (0: "
                       "the config's sample.batch_size, or one per batch device).")
  flags.DEFINE_string("json", None, "Also write the report as JSON to this path.")
  flags.mark_flags_as_required(["config", "topology"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  topology_lib.set_compiler_environment(FLAGS.topology)
  report = aot.compile_for_topology(FLAGS.config, FLAGS.program, FLAGS.topology,
                                    FLAGS.num_slices, FLAGS.batch)
  print(aot.format_report(report))
  if FLAGS.json:
    outputs.save_json(FLAGS.json, report)


def run_cli() -> None:
  """Console script `grn-aot` (= python -m grn_jax.aot)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run_cli()
