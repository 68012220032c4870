"""Orbax checkpoints: parameter directories and the training checkpoint manager.

Parameter directories (`save_params` / `restore_params`) hold one Orbax PyTree `{'params': ...}`;
the converter CLI writes them from released PyTorch weights and `config.train.init_from` reads
them.

Training checkpoints (`TrainCheckpointer`) live in `workdir/checkpoints/<step>/` with three items:
`state` (TrainState: params, optimizer, both EMAs, step), `data` (the grain iterator state, JSON)
and `config` (JSON, for the record). Saving is asynchronous and keeps the latest N. Paths may be
local or gs://.
"""

import json
from typing import Any

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp


def _abspath(path) -> epath.Path:
  path = epath.Path(path)
  return path if str(path).startswith("gs://") else path.absolute()


def save_params(path, params) -> None:
  """Writes an Orbax checkpoint of {'params': params} to directory `path` (blocking).

  Args:
    path: a directory that must not exist yet (local or gs://).
    params: a pytree of arrays (numpy or jax).
  """
  path = _abspath(path)
  if path.exists():
    raise FileExistsError(f"{path} already exists; choose a new directory for the params.")
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, {"params": params})
  checkpointer.wait_until_finished()


def _numpy_restore_args(metadata_tree):
  return jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata_tree)


def restore_params(path, abstract_params=None):
  """Reads the params of a `save_params` directory.

  Args:
    path: the directory.
    abstract_params: optional tree of jax.ShapeDtypeStruct with `.sharding` (e.g. from the
      model's sharded init); the result then lives on those shardings and its tree, shapes and
      dtypes are checked against it. Without it, numpy arrays are returned.

  Returns:
    The params tree.
  """
  path = _abspath(path)
  if not path.exists():
    raise FileNotFoundError(f"no params checkpoint at {path}; write one with "
                            "grn_jax.checkpointing.save_params or the converter CLI.")
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", None) or metadata
  tree = getattr(tree, "tree", tree)
  if "params" not in tree:
    raise ValueError(f"{path} holds keys {sorted(tree)}, not a {{'params': ...}} checkpoint.")
  if abstract_params is None:
    restored = checkpointer.restore(path, restore_args=_numpy_restore_args(tree))
    return restored["params"]
  check_tree_matches(tree["params"], abstract_params, what=str(path))
  target = {"params": abstract_params}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  restored = checkpointer.restore(path, item=target, restore_args=restore_args)
  return restored["params"]


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(k): tuple(getattr(v, "shape", ())) for k, v in flat}


def check_tree_matches(saved, expected, what: str) -> None:
  """Raises ValueError listing missing, unexpected and mis-shaped leaves."""
  have, want = _flat_shapes(saved), _flat_shapes(expected)
  missing = sorted(set(want) - set(have))
  unexpected = sorted(set(have) - set(want))
  shapes = sorted(f"{k}: {have[k]} vs {want[k]}" for k in set(have) & set(want)
                  if have[k] != want[k])
  if missing or unexpected or shapes:
    raise ValueError(f"params in {what} do not match the model: missing {missing[:10]}, "
                     f"unexpected {unexpected[:10]}, shape mismatches {shapes[:10]}.")


def _type_handlers():
  """Orbax's default handlers; replica-parallel device-to-host copies only off CPU (on fake CPU
  devices they cost seconds of compilation per new array shape and gain nothing)."""
  replica_parallel = jax.default_backend() != "cpu"
  handlers = []
  for ty in ocp.type_handlers.supported_types():
    handler = ocp.type_handlers.get_type_handler(ty)
    if ty is jax.Array:
      handler = ocp.type_handlers.ArrayHandler(use_replica_parallel=replica_parallel)
    handlers.append((ty, handler))
  return ocp.type_handlers.create_type_handler_registry(*handlers)


class TrainCheckpointer:
  """Orbax CheckpointManager for (train state, data iterator state, config)."""

  def __init__(self, workdir, max_to_keep: int = 3, async_save: bool = True):
    directory = _abspath(workdir) / "checkpoints"
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                           enable_async_checkpointing=async_save)
    state_handler = ocp.PyTreeCheckpointHandler(type_handler_registry=_type_handlers())
    self.manager = ocp.CheckpointManager(
        directory, options=options,
        item_handlers=dict(state=state_handler, data=ocp.JsonCheckpointHandler(),
                           config=ocp.JsonCheckpointHandler()))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict[str, Any], config_dict: dict[str, Any],
           force: bool = True) -> bool:
    args = ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                              data=ocp.args.JsonSave(data_state),
                              config=ocp.args.JsonSave(config_dict))
    return self.manager.save(step, args=args, force=force)

  def restore(self, step: int, abstract_state) -> tuple[Any, dict[str, Any]]:
    """(state on the shardings of `abstract_state`, data iterator state)."""
    restore_args = ocp.checkpoint_utils.construct_restore_args(abstract_state)
    args = ocp.args.Composite(state=ocp.args.PyTreeRestore(abstract_state,
                                                           restore_args=restore_args),
                              data=ocp.args.JsonRestore())
    restored = self.manager.restore(step, args=args)
    return restored.state, restored.data

  def reached_preemption(self, step: int) -> bool:
    return self.manager.reached_preemption(step)

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a tree of jax arrays."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def config_to_dict(config) -> dict[str, Any]:
  return json.loads(config.to_json_best_effort())


def _checkpoint_dir(workdir, step: int | None) -> tuple[int, epath.Path]:
  """(step, workdir/checkpoints/<step>): the given step, or the latest when None."""
  directory = _abspath(workdir) / "checkpoints"
  if step is None:
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.exists() \
        else []
    if not steps:
      raise FileNotFoundError(f"no training checkpoint under {directory}.")
    step = max(steps)
  return step, directory / str(step)


def load_train_config(workdir, step: int | None = None) -> tuple[int, dict[str, Any]]:
  """(step, the config dict saved with a training checkpoint); `step=None`: the latest."""
  step, path = _checkpoint_dir(workdir, step)
  return step, ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path / "config")


def load_train_arrays(workdir, step: int | None = None) -> tuple[int, dict[str, Any]]:
  """(step, the saved TrainState as a nested dict of numpy arrays), e.g. for comparisons and
  export; `step=None` reads the latest checkpoint."""
  step, path = _checkpoint_dir(workdir, step)
  path = path / "state"
  checkpointer = ocp.PyTreeCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", None) or metadata
  tree = getattr(tree, "tree", tree)
  return step, checkpointer.restore(path, restore_args=_numpy_restore_args(tree))
