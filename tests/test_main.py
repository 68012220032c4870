"""grn_jax.main checks the task, the mode and every config field before it runs anything.

Run in subprocesses: main defines its absl flags on import (as the converter command does), so
it must not share a process with other command-line modules.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}

CHECKS = textwrap.dedent("""
    from configs import c2i, demo, tokenizer
    from grn_jax import main
    bad_mode = c2i.get_config("variant=tiny")
    bad_mode.mode = "serve"
    for name, config in [("c2i", c2i.get_config("variant=tiny")),
                         ("demo", demo.get_config("size=test")),
                         ("tokenizer", tokenizer.get_config("variant=tiny")),
                         ("bad_mode", bad_mode)]:
      try:
        main.validate_config(config)
        print(name, "OK")
      except ValueError as e:
        print(name, "ERROR", e)
""")


def test_validate_config_accepts_the_config_files_and_names_bad_task_and_mode():
  out = subprocess.run([sys.executable, "-c", CHECKS], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
  assert lines["c2i"] == "OK" and lines["demo"] == "OK"
  assert lines["tokenizer"] == ("ERROR config.task='tokenizer': grn_jax.main runs the tasks "
                                "('c2i',).")
  assert lines["bad_mode"].startswith("ERROR config.mode='serve' must be one of")


def test_unknown_command_line_field_fails_naming_it(tmp_path):
  out = subprocess.run([sys.executable, "-m", "grn_jax.main",
                        "--config=configs/c2i.py:variant=tiny", f"--workdir={tmp_path}",
                        "--config.train.global_batch_sise=8"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'Did you mean "global_batch_size" instead of "global_batch_sise"?' in out.stderr
  assert not os.listdir(tmp_path)  # nothing ran
