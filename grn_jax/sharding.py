"""Device mesh and logical-axis sharding (GSPMD style, as in maxtext).

One mesh `('data', 'fsdp', 'tensor')` from `config.mesh` (-1 = the remaining devices), logical
axis rules from `config.sharding_rules`. Parameters are created sharded: eval_shape(init) ->
logical partition specs -> mesh shardings -> jit(init, out_shardings=...).

Multi-slice TPU runs (devices of several slices, `device.slice_index`) get a hybrid mesh: the
slices talk over the data-centre network, much slower than the chips' links within a slice, so
only the 'data' axis crosses slices (`mesh_utils.create_hybrid_device_mesh`, as maxtext):
'data' = slices x data-within-a-slice, 'fsdp' and 'tensor' stay inside each slice.
"""

from typing import Any, Callable, Sequence

from absl import logging

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, Any]]


def mesh_shape(mesh_cfg: ml_collections.ConfigDict | dict, num_devices: int) -> tuple[int, ...]:
  """Resolves -1 in {'data', 'fsdp', 'tensor'} sizes against the device count.

  `mesh_cfg` is config.mesh or a plain dict; an axis it leaves out has size 1 (e.g.
  {'data': -1} is a pure data-parallel mesh).
  """
  unknown = sorted(set(mesh_cfg.keys()) - set(MESH_AXES))
  if unknown:
    raise ValueError(f"config.mesh: unknown axes {unknown}; the mesh axes are {MESH_AXES}.")
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}.")
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.mesh: sizes must be positive or -1, got {sizes}.")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} does not divide "
                       f"{num_devices} devices.")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} "
                     f"devices, but {num_devices} are available.")
  return tuple(sizes)


def num_slices(devices: Sequence[jax.Device]) -> int:
  """The number of TPU slices the devices belong to (1 for devices without slices)."""
  return len({getattr(d, "slice_index", 0) for d in devices})


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh with Auto axis types (needed for logical-rule sharding in this JAX version).

  Sizes without -1 whose product is smaller than the device count use the first devices (with
  a warning), e.g. `data=1` for a one-device run on a multi-device host. Devices of several
  slices make a hybrid mesh whose 'data' axis alone crosses the slices (module docstring).
  """
  devices = list(devices) if devices is not None else jax.devices()
  sizes = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  wanted = int(np.prod(sizes))
  slices = num_slices(devices)
  if (-1 not in sizes and 0 < wanted < len(devices) and jax.process_count() == 1 and
      slices == 1):
    logging.warning("config.mesh %s uses %d of the %d devices.", dict(zip(MESH_AXES, sizes)),
                    wanted, len(devices))
    devices = devices[:wanted]
  shape = mesh_shape(mesh_cfg, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if slices == 1:
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
  data, fsdp, tensor = shape
  if data % slices:
    raise ValueError(
        f"config.mesh {dict(zip(MESH_AXES, shape))} on {slices} slices: only the 'data' axis "
        f"may cross slices, so config.mesh.data must be a multiple of {slices} (e.g. "
        f"--config.mesh.data={slices} --config.mesh.fsdp=-1 for FSDP within each slice).")
  grid = mesh_utils.create_hybrid_device_mesh((data // slices, fsdp, tensor), (slices, 1, 1),
                                              devices)
  return Mesh(grid, MESH_AXES, axis_types=axis_types)


def rules_from_config(rules) -> tuple[tuple[str, Any], ...]:
  """config.sharding_rules (tuples or lists from the command line) -> hashable rules."""
  out = []
  for rule in rules:
    name, target = rule
    if isinstance(target, list):
      target = tuple(target)
    for axis in (target if isinstance(target, tuple) else (target,)):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"config.sharding_rules: {name!r} -> unknown mesh axis {axis!r}.")
    out.append((name, target))
  return tuple(out)


def logical_shardings(abstract_tree, mesh: Mesh, rules: Rules):
  """NamedShardings for a tree of (boxed) abstract values from `jax.eval_shape(init)`."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules_from_config(rules))


def sharded_init(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules, *args):
  """Runs `init_fn(*args)` under jit with every leaf created directly on its sharding.

  Returns (unboxed variables, their NamedShardings).
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = logical_shardings(abstract, mesh, rules)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules_from_config(rules)):
    variables = jax.jit(lambda *a: nn.unbox(init_fn(*a)), out_shardings=shardings)(*args)
  return variables, shardings


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) axis over ('data', 'fsdp'); the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def shard_host_batch(batch, mesh: Mesh):
  """Process-local numpy batch (this host's share) -> global arrays sharded over the batch axis."""
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x)
  return jax.tree.map(put, batch)
