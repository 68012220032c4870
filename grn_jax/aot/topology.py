"""TPU slices by their Cloud names, as devices of the TPU compiler on any host (no TPU needed).

  chip, devices = topology_devices("v5p-64")                 # 32 TPU v5 devices, 95 GiB each
  chip, devices = topology_devices("v6e-256", num_slices=2)  # 2 slices of 256 chips

Names are those of `gcloud compute tpus tpu-vm create --accelerator-type`: v5p-N counts
TensorCores (2 per chip, so v5p-64 is 32 chips), v5e-N (also v5litepod-N) and v6e-N count chips.
`jax.experimental.topologies.get_topology_desc` describes the slice to libtpu's compiler; its
devices carry `slice_index` when num_slices > 1 (sharding.make_mesh then builds a hybrid mesh).
The libtpu wheel must be installed (pip install libtpu==0.0.42.1, requirements-test.txt), and
JAX must not try to open a TPU: run with JAX_PLATFORMS=cpu (the `grn_jax.aot` command sets it).
"""

import dataclasses
import importlib.util
import os
import re

import jax

LIBTPU_REQUIREMENT = "libtpu==0.0.42.1"


@dataclasses.dataclass(frozen=True)
class Chip:
  """One TPU generation: its topology prefix, device kind, HBM and bf16 peak per chip."""
  name: str
  topology_prefix: str
  device_kind: str
  hbm_bytes: int
  peak_bf16_flops: float
  cores_per_chip: int   # TensorCores counted by the Cloud name (v5p: 2)
  sizes: dict[int, str]  # chips -> physical topology


# Physical shapes of the slice sizes Cloud TPU offers (chips -> topology).
_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
              256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
              256: "16x16"}

CHIPS = {
    "v5p": Chip("v5p", "v5p", "TPU v5", 95 * 2**30, 459e12, 2, _SHAPES_3D),
    "v5e": Chip("v5e", "v5e", "TPU v5 lite", 16 * 2**30, 197e12, 1, _SHAPES_2D),
    "v6e": Chip("v6e", "v6e", "TPU v6 lite", 32 * 2**30, 918e12, 1, _SHAPES_2D),
}
_ALIASES = {"v5litepod": "v5e"}


class UnknownTopologyError(ValueError):
  """The topology name is not a Cloud TPU slice this module knows."""


class LibtpuMissingError(RuntimeError):
  """The TPU compiler (the libtpu wheel) is not installed."""


def known_topologies() -> list[str]:
  return [f"{chip.name}-{chips * chip.cores_per_chip}" for chip in CHIPS.values()
          for chips in chip.sizes]


def parse_topology(name: str) -> tuple[Chip, int, str]:
  """'v5p-64' -> (the v5p Chip, 32 chips, 'v5p:2x4x4'); UnknownTopologyError otherwise."""
  match = re.fullmatch(r"([a-z0-9]+)-(\d+)", name.strip().lower())
  generation = match and _ALIASES.get(match.group(1), match.group(1))
  chip = CHIPS.get(generation) if match else None
  if chip is None or int(match.group(2)) % chip.cores_per_chip:
    raise UnknownTopologyError(
        f"--topology={name!r} is not a known TPU slice; use a Cloud TPU accelerator type: "
        f"{', '.join(known_topologies())}.")
  chips = int(match.group(2)) // chip.cores_per_chip
  if chips not in chip.sizes:
    sizes = ", ".join(f"{chip.name}-{c * chip.cores_per_chip}" for c in chip.sizes)
    raise UnknownTopologyError(f"--topology={name!r}: {chip.name} slices come in {sizes}.")
  return chip, chips, f"{chip.topology_prefix}:{chip.sizes[chips]}"


def _check_libtpu() -> None:
  if importlib.util.find_spec("libtpu") is None:
    raise LibtpuMissingError(
        "compiling for a TPU topology needs the TPU compiler: pip install "
        f"{LIBTPU_REQUIREMENT} (it is in requirements-test.txt; no TPU is needed).")


def set_compiler_environment(topology: str) -> None:
  """Defaults that keep libtpu from looking for a TPU on this host (before it starts), and let
  several compiling processes share it (no TPU is opened, so its lock file is not needed)."""
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology)


def topology_devices(name: str, num_slices: int = 1) -> tuple[Chip, list[jax.Device]]:
  """(chip, the devices of `num_slices` slices of topology `name`) for the TPU compiler."""
  chip, chips, topology_name = parse_topology(name)
  if num_slices < 1:
    raise UnknownTopologyError(f"--num_slices must be >= 1, got {num_slices}.")
  _check_libtpu()
  set_compiler_environment(name)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  host_bounds = (1, 1, 1) if chips == 1 else (2, 2, 1)
  desc = topologies.get_topology_desc(
      platform="tpu", topology_name=topology_name, chip_config_name="default",
      chips_per_host_bounds=host_bounds, num_slices=num_slices)
  devices = list(desc.devices)
  if len(devices) != chips * num_slices or devices[0].device_kind != chip.device_kind:
    raise UnknownTopologyError(
        f"libtpu describes {topology_name} x {num_slices} as {len(devices)} "
        f"{devices[0].device_kind!r} devices, expected {chips * num_slices} "
        f"{chip.device_kind!r}; is {LIBTPU_REQUIREMENT} installed?")
  return chip, devices
