"""Fault injection: `python -m grn_jax.main` killed with SIGKILL (and stopped with SIGTERM) at
random points of training and of generation, then rerun, ends bitwise where an uninterrupted run
ends: the same train state and data position, the same sample files, nothing lost, nothing
duplicated; a damaged newest checkpoint on the way is survived too.

The kill points come from seeded generators (GRN_FAULT_SEEDS="0,1,2" runs more seeds; CI runs
seed 0). Every process shares one persistent compilation cache, so only the first one compiles.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from grn_jax import checkpointing
from grn_jax import preemption

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEEDS = [int(s) for s in os.environ.get("GRN_FAULT_SEEDS", "0").split(",")]
TRAIN_STEPS = 6
NUM_IMAGES = 24
TRAIN_FLAGS = ("--mode=train", f"--config.train.total_steps={TRAIN_STEPS}",
               "--config.train.checkpoint_every_steps=1", "--config.train.log_every_steps=2",
               "--config.train.keep_checkpoints=2", "--config.train.async_checkpointing=True")
SAMPLE_FLAGS = ("--mode=sample", "--config.tokenizer.random_init=True",
                f"--config.sample.num_images={NUM_IMAGES}", "--config.sample.batch_size=8",
                "--config.sample.num_steps=2")


@pytest.fixture(scope="module")
def env(tmp_path_factory, cheap_xla_flags):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
          "XLA_FLAGS": f"--xla_force_host_platform_device_count=8 {cheap_xla_flags}",
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"}


def _command(workdir, flags):
  return [sys.executable, "-m", "grn_jax.main", "--config=configs/c2i.py:variant=tiny",
          f"--workdir={workdir}", *flags]


def _run(workdir, flags, env) -> subprocess.CompletedProcess:
  out = subprocess.run(_command(workdir, flags), cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _interrupt(workdir, flags, env, progress, target: int, delay: float,
               sig=signal.SIGKILL) -> int:
  """Starts the command, sends `sig` `delay` s after progress(workdir) reaches `target`;
  returns the exit status (or 0 if the run finished first)."""
  proc = subprocess.Popen(_command(workdir, flags), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 600
  while proc.poll() is None and progress(workdir) < target and time.monotonic() < deadline:
    time.sleep(0.02)
  time.sleep(delay)
  if proc.poll() is None:
    proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=600)
  assert proc.returncode in (0, -sig, preemption.EXIT_INTERRUPTED), stderr[-3000:]
  return proc.returncode


def _checkpoint_steps(workdir) -> int:
  directory = pathlib.Path(workdir) / "checkpoints"
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] \
      if directory.exists() else []
  return max(steps, default=0)


def _png_count(workdir) -> int:
  samples = pathlib.Path(workdir) / "samples"
  return len(list(samples.glob("*.png"))) if samples.exists() else 0


def _flatten(tree, prefix=""):
  if isinstance(tree, dict):
    for k in sorted(tree):
      yield from _flatten(tree[k], f"{prefix}/{k}")
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      yield from _flatten(v, f"{prefix}/{i}")
  else:
    yield prefix, tree


def _data_state(workdir, step):
  item = pathlib.Path(workdir) / "checkpoints" / str(step) / "data"
  return sorted((p.name, p.read_bytes()) for p in item.rglob("*")
                if p.is_file() and p.name != "commit_success.txt")


def _files(directory):
  """Every file's bytes; samples.npz by its arrays (zip entries carry their write time)."""
  files = {}
  for p in sorted(pathlib.Path(directory).iterdir()):
    if p.suffix == ".npz":
      with np.load(p) as data:
        files[p.name] = {k: data[k].tobytes() for k in data.files}
    else:
      files[p.name] = p.read_bytes()
  return files


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
  """The uninterrupted runs: training, then generation from its checkpoint."""
  workdir = tmp_path_factory.mktemp("reference")
  _run(workdir, TRAIN_FLAGS, env)
  _run(workdir, SAMPLE_FLAGS, env)
  return workdir


def _truncate_newest_checkpoint(workdir):
  step = _checkpoint_steps(workdir)
  for f in (pathlib.Path(workdir) / "checkpoints" / str(step) / "state").rglob("*"):
    if f.is_file() and f.parent.name == "d":
      f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
  return step


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_training_and_generation_resume_bitwise(tmp_path, env, reference, seed):
  rng = np.random.default_rng(seed)
  workdir = tmp_path / "run"
  kills = 0
  # Training: SIGTERM once (saves, exit status 75), SIGKILL twice, each at a random step and
  # a random moment of it (during the async checkpoint writes, between steps ...).
  for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
    done = _checkpoint_steps(workdir)
    target = int(rng.integers(done, max(done + 1, TRAIN_STEPS - 2)))
    status = _interrupt(workdir, TRAIN_FLAGS, env, _checkpoint_steps, target,
                        float(rng.uniform(0, 0.4)), sig)
    kills += status != 0
    if sig == signal.SIGTERM and status != 0:
      assert status == preemption.EXIT_INTERRUPTED
  damaged = _truncate_newest_checkpoint(workdir) if _checkpoint_steps(workdir) > 1 else None
  _run(workdir, TRAIN_FLAGS, env)
  if damaged is not None and damaged < TRAIN_STEPS:  # resumed from the one before, kept it
    assert (workdir / "checkpoints_damaged" / str(damaged)).is_dir()
  ref_step, ref_state = checkpointing.load_train_arrays(reference)
  step, state = checkpointing.load_train_arrays(workdir)
  assert step == ref_step == TRAIN_STEPS
  ref_leaves, leaves = dict(_flatten(ref_state)), dict(_flatten(state))
  assert sorted(leaves) == sorted(ref_leaves)
  for name, leaf in ref_leaves.items():
    np.testing.assert_array_equal(leaves[name], leaf, err_msg=name)
  assert _data_state(workdir, step) == _data_state(reference, step)  # same data position

  # Generation from that checkpoint: SIGKILL twice at random images, then complete it.
  for _ in range(2):
    done = _png_count(workdir)
    target = int(rng.integers(done, max(done + 1, NUM_IMAGES - 8)))
    kills += _interrupt(workdir, SAMPLE_FLAGS, env, _png_count, target,
                        float(rng.uniform(0, 0.3))) != 0
  _run(workdir, SAMPLE_FLAGS, env)
  assert _files(workdir / "samples") == _files(reference / "samples")  # PNGs, npz, record
  print(f"fault injection seed {seed}: survived {kills} kills")
  assert kills >= 1  # a run may finish before its signal lands; the comparisons hold anyway
