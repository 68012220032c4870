"""grn_jax.aot: programs compiled by the real TPU compiler (libtpu) for TPU topologies, on CPU.

Two pod-sized programs are compiled (about 2-3 minutes each on 2 cores): the largest C2I train
step (GRN-G, official global batch 1024, bfloat16, scanned blocks, FSDP over v5p-64's 32 chips)
and the T2V-2B network pass at 480p x 81 frames (33,390 visual tokens per row, one row per chip); the
other rows of the table are left to `python -m grn_jax.benchmarks.aot_table`. The rest of the
tests need no compile: topology names, meshes (hybrid across slices), errors.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import c2i as c2i_configs
from configs import t2iv as t2iv_configs
from grn_jax import aot
from grn_jax import sharding
from grn_jax.aot import topology

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="needs the TPU compiler: pip install libtpu==0.0.42.1")

SCHEMA = {"platform", "device_kind", "num_devices", "program", "global_batch", "hbm_bytes",
          "per_device", "compiler_flops", "model_flops", "compile_seconds"}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_DEVICE = {"argument_bytes", "output_bytes", "alias_bytes", "temp_bytes", "total_bytes"}


@pytest.mark.parametrize("name,chips,physical,kind", [
    ("v5p-64", 32, "v5p:2x4x4", "TPU v5"),
    ("v5p-8", 4, "v5p:2x2x1", "TPU v5"),
    ("v5litepod-16", 16, "v5e:4x4", "TPU v5 lite"),
    ("v6e-256", 256, "v6e:16x16", "TPU v6 lite"),
])
def test_topology_names_follow_cloud_accelerator_types(name, chips, physical, kind):
  chip, count, topology_name = topology.parse_topology(name)
  assert (count, topology_name, chip.device_kind) == (chips, physical, kind)


@pytest.mark.parametrize("name,message", [
    ("v5p-63", "not a known TPU slice"), ("v9x-8", "not a known TPU slice"),
    ("v5p-12", "slices come in"), ("tpu", "not a known TPU slice")])
def test_unknown_topologies_fail_with_the_known_ones(name, message):
  with pytest.raises(topology.UnknownTopologyError, match=message):
    topology.parse_topology(name)


def test_missing_libtpu_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(topology.LibtpuMissingError, match="pip install libtpu==0.0.42.1"):
    topology.topology_devices("v5p-8")


def test_topology_devices_and_a_mesh_that_does_not_match():
  chip, devices = topology.topology_devices("v5p-64")
  assert len(devices) == 32 and {d.platform for d in devices} == {"tpu"}
  assert chip.hbm_bytes == 95 * 2**30
  mesh = aot.topology_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices, "v5p-64")
  assert dict(mesh.shape) == {"data": 1, "fsdp": 32, "tensor": 1}
  with pytest.raises(aot.MeshMismatchError, match="v5p-64 has 32 chips"):
    aot.topology_mesh({"data": 2, "fsdp": 8, "tensor": 1}, devices, "v5p-64")


def test_multi_slice_mesh_is_hybrid_with_only_data_across_slices():
  _, devices = topology.topology_devices("v5p-8", num_slices=2)
  assert sharding.num_slices(devices) == 2
  mesh = sharding.make_mesh({"data": 2, "fsdp": -1, "tensor": 1}, devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  slices = np.vectorize(lambda d: d.slice_index)(mesh.devices)
  # Each data row is one slice: fsdp (and tensor) never leave it.
  assert [set(slices[i].ravel()) for i in range(2)] == [{0}, {1}]
  with pytest.raises(ValueError, match="multiple of 2"):
    sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}, devices)


@pytest.fixture(scope="module")
def grn_g_train():
  config = c2i_configs.get_config("variant=G")
  config.model.update(dtype="bfloat16", scan_layers=True)
  config.mesh.update(data=1, fsdp=-1)
  return aot.compile_for_topology(config, "train", "v5p-64")


def test_grn_g_train_step_fits_v5p_64(grn_g_train):
  report = grn_g_train
  assert SCHEMA <= set(report) and PER_DEVICE == set(report["per_device"])
  json.dumps(report)
  assert (report["platform"], report["num_devices"], report["global_batch"]) == ("tpu", 32, 1024)
  assert report["per_chip_batch"] == 32
  mem = report["per_device"]
  # Params + AdamW moments + 2 EMAs of 2.0B float32 parameters, sharded over 32 chips.
  state = 5 * 4 * 2.0e9 / 32
  assert 0.9 * state < mem["argument_bytes"] < 1.2 * state
  assert mem["alias_bytes"] > 0.9 * mem["argument_bytes"]  # the state is donated
  assert 0 < mem["total_bytes"] <= report["hbm_bytes"] and report["fits"]
  # The compiler sees the scanned block body once; our count is the whole step (all chips).
  assert report["model_flops"] / 32 > 5 * report["compiler_flops"] > 0


@pytest.fixture(scope="module")
def t2v_2b_denoise():
  config = t2iv_configs.get_config("variant=2B,task=t2v")
  config.model.update(dtype="bfloat16", scan_layers=True)
  config.sample.duration = 5.0  # 81 frames: 21 x 30 x 53 latent tokens
  return aot.compile_for_topology(config, "denoise", "v5p-8")


def test_t2v_2b_long_sequence_attention_is_the_splash_kernel(t2v_2b_denoise):
  report = t2v_2b_denoise
  assert report["settings"]["tokens"] == 21 * 30 * 53
  assert report["splash_attention"] and report["fits"]
  # XLA's attention would hold the scores of every head, [heads, N, M] in bfloat16 per row:
  # 18 x 33,391 x 33,903 x 2 bytes = 38 GiB per chip; with the splash kernel the temporaries of
  # the whole pass (activations of one block, the MLP's included) are a small part of that.
  queries = report["settings"]["tokens"] + 1
  scores = 18 * queries * (queries + 512) * 2
  assert report["per_device"]["temp_bytes"] < scores / 4


def test_command_writes_the_json_report(tmp_path):
  path = tmp_path / "report.json"
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "grn_jax.aot", "--config=configs/c2i.py:variant=tiny",
         "--topology=v5p-8", "--program=decode", f"--json={path}"]
  out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(path.read_text())
  assert SCHEMA <= set(report) and report["program"] == "decode"
  assert (report["platform"], report["num_devices"], report["global_batch"]) == ("tpu", 4, 4)
  assert report["per_device"]["total_bytes"] > 0 and report["model_flops"] > 0
  assert "fits" in out.stdout
  bad = subprocess.run(cmd[:4] + ["--topology=v5p-7"], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert bad.returncode != 0 and "not a known TPU slice" in bad.stderr
