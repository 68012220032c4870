"""Ahead-of-time compilation of the project's programs for real TPU topologies on any host.

  python -m grn_jax.aot --config=configs/c2i.py:variant=G --topology=v5p-64 \
      --config.model.dtype=bfloat16 --config.model.scan_layers=True --config.mesh.data=1 \
      --config.mesh.fsdp=-1 [--program=train|sample|decode|encode_text|denoise] [--json=PATH]

  report = aot.compile_for_topology(config, "train", "v5p-64")   # a dict, the JSON below

The program is THE one the runs use (grn_jax/aot/programs.py), built on abstract inputs over
the devices of the topology (grn_jax/aot/topology.py) and compiled by libtpu's TPU compiler.
The report (`--json`):
  platform 'tpu', device_kind, num_devices, topology, num_slices, program, mesh,
  global_batch, per_chip_batch, inputs, settings, hbm_bytes (per chip),
  per_device: {argument_bytes, output_bytes, alias_bytes, temp_bytes, total_bytes},
  fits (total <= hbm), compiler_flops (cost_analysis: one chip's, a loop body counted once),
  model_flops (ours, all chips, one call) and model_flops_rule, compile_seconds,
  splash_attention (whether the Pallas splash kernel is in the program).
`total_bytes` = argument + output - alias + temp: donated inputs share their outputs' buffers.
"""

import time
from typing import Any

import jax
import ml_collections

from grn_jax import sharding
from grn_jax.aot import programs
from grn_jax.aot import topology as topology_lib

PROGRAMS = programs.PROGRAMS


class MeshMismatchError(ValueError):
  """config.mesh does not cover the devices of the topology."""


def topology_mesh(mesh_cfg: ml_collections.ConfigDict, devices: list[jax.Device],
                  topology: str) -> jax.sharding.Mesh:
  """The run's mesh (sharding.make_mesh) over all the topology's devices; an explicit mesh of
  another size is an error here (a run would silently leave chips idle)."""
  try:
    sharding.mesh_shape(mesh_cfg, len(devices))
  except ValueError as e:
    raise MeshMismatchError(f"{e} --topology={topology} has {len(devices)} chips: set the "
                            "mesh sizes to multiply to that, or one of them to -1.") from e
  return sharding.make_mesh(mesh_cfg, devices)


def memory_report(compiled: jax.stages.Compiled) -> dict[str, int]:
  """Per-chip bytes of a compiled program (memory_analysis), with the total it needs."""
  mem = compiled.memory_analysis()
  out = {f"{name}_bytes": int(getattr(mem, f"{name}_size_in_bytes"))
         for name in ("argument", "output", "alias", "temp")}
  out["total_bytes"] = (out["argument_bytes"] + out["output_bytes"] - out["alias_bytes"] +
                        out["temp_bytes"])
  return out


def compiler_flops(compiled: jax.stages.Compiled) -> float:
  """The compiler's flop count of one chip's program (cost_analysis; a loop body once)."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def has_splash_kernel(compiled: jax.stages.Compiled) -> bool:
  """Whether the compiled program runs a Pallas TPU kernel (the splash attention)."""
  text = compiled.as_text()
  return "tpu_custom_call" in text and "splash" in text


def compile_for_topology(config: ml_collections.ConfigDict, program: str, topology: str,
                         num_slices: int = 1, batch: int = 0) -> dict[str, Any]:
  """Builds `program` of `config` for `topology`, compiles it with the TPU compiler, reports.

  Args:
    config: a whole config (configs/*.py), overrides applied.
    program: one of PROGRAMS.
    topology: a Cloud TPU accelerator type, e.g. 'v5p-64' (per slice).
    num_slices: slices of that type (> 1: a hybrid mesh, 'data' across slices).
    batch: rows of a sample / decode / encode_text call (0: the config's / one per device).

  Returns:
    The report of the module docstring.
  """
  chip, devices = topology_lib.topology_devices(topology, num_slices)
  mesh = topology_mesh(config.mesh, devices, topology)
  built = programs.build(config, program, mesh, batch)
  start = time.perf_counter()
  lowered = built.lower()
  compiled = lowered.compile()
  seconds = time.perf_counter() - start
  per_device = memory_report(compiled)
  batch_shards = programs.batch_devices(mesh)
  return {
      "platform": devices[0].platform,
      "device_kind": devices[0].device_kind,
      "num_devices": len(devices),
      "topology": topology,
      "num_slices": num_slices,
      "program": program,
      "mesh": {k: int(v) for k, v in mesh.shape.items()},
      "global_batch": built.global_batch,
      "per_chip_batch": built.global_batch / batch_shards,
      "inputs": built.inputs,
      "settings": {k: v if isinstance(v, (bool, int, float, str)) or v is None else str(v)
                   for k, v in built.settings.items()},
      "hbm_bytes": chip.hbm_bytes,
      "per_device": per_device,
      "fits": per_device["total_bytes"] <= chip.hbm_bytes,
      "compiler_flops": compiler_flops(compiled),
      "model_flops": float(built.model_flops),
      "model_flops_rule": built.model_flops_rule,
      "compile_seconds": round(seconds, 1),
      "splash_attention": has_splash_kernel(compiled),
  }


def format_report(report: dict[str, Any]) -> str:
  """The report as a few readable lines."""
  gib = lambda b: f"{b / 2**30:.2f} GiB"
  mem = report["per_device"]
  lines = [
      f"{report['program']} on {report['topology']} x {report['num_slices']} "
      f"({report['num_devices']} {report['device_kind']} chips, mesh {report['mesh']})",
      f"  batch {report['global_batch']} global, {report['per_chip_batch']:g} per chip; "
      f"inputs {report['inputs']}",
      f"  settings {report['settings']}",
      f"  per chip: arguments {gib(mem['argument_bytes'])}, outputs {gib(mem['output_bytes'])}, "
      f"aliased {gib(mem['alias_bytes'])}, temporaries {gib(mem['temp_bytes'])}",
      f"  total {gib(mem['total_bytes'])} of {gib(report['hbm_bytes'])} HBM: "
      f"{'fits' if report['fits'] else 'DOES NOT FIT'}",
      f"  compiler flops {report['compiler_flops']:.4g} (one chip, loop bodies once); model "
      f"flops {report['model_flops']:.4g} (all chips: {report['model_flops_rule']}); "
      f"{report['model_flops'] / report['num_devices']:.4g} per chip",
      f"  splash attention kernel: {report['splash_attention']}; compile "
      f"{report['compile_seconds']:.1f} s",
  ]
  return "\n".join(lines)
