"""The loop on two processes x 2 CPU devices (jax.distributed + gloo) trains like one process x
4 devices: C2I, and T2I/T2V on packed rows (each process packs its own rows of the global batch)."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from grn_jax import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = r"""
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
process_id, num_processes, port, workdir, task = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                                 sys.argv[4], sys.argv[5])
if num_processes > 1:
  jax.distributed.initialize(coordinator_address=f"localhost:{port}",
                             num_processes=num_processes, process_id=process_id)
from grn_jax.trainers import loop
if task == "c2i":
  from configs import c2i
  config, dataset = c2i.get_config("variant=tiny"), None
else:
  from tests.trainers import test_t2iv
  config, dataset = test_t2iv.tiny_config(data=2, fsdp=2, tensor=1), test_t2iv.tiny_examples()
config.train.update(total_steps=4, checkpoint_every_steps=4, log_every_steps=2,
                    peak_flops_per_device=1e11)
assert jax.device_count() == 4, jax.devices()
loop.train(config, workdir, dataset)
print("done", process_id)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _launch(process_id, num_processes, port, workdir, devices, task, xla_flags):
  env = dict(os.environ)
  # The cheap backend only shortens compilation; both runs use the same flags.
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {xla_flags}",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen([sys.executable, "-c", WORKER, str(process_id), str(num_processes),
                           str(port), workdir, task], env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("task", ["c2i", "t2v"])
def test_two_processes_train_to_the_same_parameters_as_one(tmp_path, task, cheap_xla_flags):
  port = _free_port()
  multi = str(tmp_path / "two_processes")
  single = str(tmp_path / "one_process")
  procs = [_launch(i, 2, port, multi, 2, task, cheap_xla_flags) for i in range(2)]
  procs.append(_launch(0, 1, port, single, 4, task, cheap_xla_flags))
  outputs = []
  for p in procs:
    out, _ = p.communicate(timeout=480)
    outputs.append(out)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  step_multi, state_multi = checkpointing.load_train_arrays(multi)
  step_single, state_single = checkpointing.load_train_arrays(single)
  assert step_multi == step_single == 4
  # Same global batches and random numbers; only the all-reduce order may differ.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               (state_multi["params"], state_multi["ema_params"]),
               (state_single["params"], state_single["ema_params"]))
  if task == "c2i":
    moved = [np.abs(a).max() for a in jax.tree.leaves(state_single["params"]["final_linear"])]
    assert max(moved) > 0  # the zero-initialised output layer was trained
