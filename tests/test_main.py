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
    from configs import c2i, demo, t2iv, tokenizer
    from grn_jax import main
    bad_mode = c2i.get_config("variant=tiny")
    bad_mode.mode = "serve"
    bad_task = c2i.get_config("variant=tiny")
    bad_task.task = "t2x"
    sampled_tokenizer = tokenizer.get_config("variant=tiny")
    sampled_tokenizer.mode = "sample"
    bad_demo = demo.get_config("size=test")
    bad_demo.tokenizer_train.optim.blr = -1.0
    gaps = {}
    for section, field, value in (("model", "num_heads", 0), ("sample", "batch_size", 0),
                                  ("train", "num_epochs", 0), ("sample", "cfg_scale", -1.0),
                                  ("sample", "cfg_interval", (0.8, 0.2))):
      gaps[f"{section}.{field}"] = c2i.get_config("variant=tiny")
      gaps[f"{section}.{field}"][section][field] = value
    for name, config in [("c2i", c2i.get_config("variant=tiny")),
                         ("demo", demo.get_config("size=test")),
                         ("tokenizer", tokenizer.get_config("variant=tiny")),
                         ("tokenizer_image16", tokenizer.get_config("variant=image16")),
                         ("t2i", t2iv.get_config("variant=2B,task=t2i")),
                         ("t2v_tiny", t2iv.get_config("variant=tiny,task=t2v")),
                         ("bad_mode", bad_mode), ("bad_task", bad_task),
                         ("sampled_tokenizer", sampled_tokenizer), ("bad_demo", bad_demo),
                         *gaps.items()]:
      try:
        main.validate_config(config)
        print(name, "OK")
      except ValueError as e:
        print(name, "ERROR", e)
""")


def test_validate_config_accepts_the_config_files_and_names_bad_task_and_mode():
  """Every config file passes; an unknown task names the known ones; the demo's tokenizer
  sections are checked as the tokenizer task's config."""
  out = subprocess.run([sys.executable, "-c", CHECKS], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
  assert lines["c2i"] == lines["demo"] == lines["tokenizer"] == lines["tokenizer_image16"] == "OK"
  assert lines["t2i"] == lines["t2v_tiny"] == "OK"
  assert lines["bad_mode"].startswith("ERROR config.mode='serve' must be one of")
  assert lines["bad_task"] == ("ERROR config.task='t2x' is not a training task; known tasks: "
                               "c2i, tokenizer, t2i, t2v.")
  assert lines["sampled_tokenizer"] == ("ERROR mode 'sample' runs the tasks ('c2i',); "
                                        "config.task='tokenizer' only trains (--mode=train).")
  assert lines["bad_demo"].startswith("ERROR config.tokenizer_train (the demo's tokenizer run")
  assert lines["bad_demo"].endswith("config.optim.blr must be > 0, got -1.0.")
  # Values that used to crash inside the code (ZeroDivisionError, grain) or run silently.
  assert lines["model.num_heads"] == "ERROR config.model.num_heads must be >= 1, got 0."
  assert lines["sample.batch_size"] == "ERROR config.sample.batch_size must be >= 1, got 0."
  assert lines["train.num_epochs"].startswith("ERROR config.train.num_epochs=0 trains nothing")
  assert lines["sample.cfg_scale"].startswith("ERROR config.sample.cfg_scale must be >= 0")
  assert lines["sample.cfg_interval"].startswith(
      "ERROR config.sample.cfg_interval=(0.8, 0.2) must satisfy low <= high <= 1")


def test_unknown_command_line_field_fails_naming_it(tmp_path):
  out = subprocess.run([sys.executable, "-m", "grn_jax.main",
                        "--config=configs/c2i.py:variant=tiny", f"--workdir={tmp_path}",
                        "--config.train.global_batch_sise=8"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert 'Did you mean "global_batch_size" instead of "global_batch_sise"?' in out.stderr
  assert not os.listdir(tmp_path)  # nothing ran


def test_unknown_pretrained_name_fails_listing_the_registry(tmp_path):
  out = subprocess.run([sys.executable, "-m", "grn_jax.main",
                        "--config=configs/c2i.py:variant=tiny", f"--workdir={tmp_path}",
                        "--pretrained=GRN_ind_Z"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "unknown pretrained model 'GRN_ind_Z'; known: GRN_ind_B" in out.stderr
  assert not os.listdir(tmp_path)


def test_console_scripts_name_existing_functions():
  import ast  # pylint: disable=g-import-not-at-top
  import configparser  # pylint: disable=g-import-not-at-top
  setup = configparser.ConfigParser()
  setup.read(ROOT / "setup.cfg")
  entries = [line.split("=") for line in
             setup["options.entry_points"]["console_scripts"].strip().splitlines()]
  names = {name.strip() for name, _ in entries}
  assert {"grn-train", "grn-sample", "grn-convert", "grn-pretrained", "grn-fid", "grn-app",
          "grn-aot"} <= names
  for name, target in entries:
    module, function = target.strip().split(":")
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    defined = {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    assert function in defined, (name, target)
