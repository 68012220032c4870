"""Orbax checkpoints: parameter directories and the training checkpoint manager.

Parameter directories (`save_params` / `restore_params`) hold one Orbax PyTree `{'params': ...}`;
the converter CLI writes them from released PyTorch weights and `config.train.init_from` reads
them.

Training checkpoints (`TrainCheckpointer`) live in `workdir/checkpoints/<step>/` with three items:
`state` (TrainState: params, optimizer, both EMAs, step), `data` (the grain iterator state, JSON)
and `config` (JSON: resume compares it with the new config). Saving is asynchronous and keeps
the latest N. Paths may be local or gs://.

A damaged checkpoint (an item missing, a truncated or corrupt OCDBT file) is never silently
used and never deleted: `restore_latest` falls back to the newest intact one, saying so, and
moves the damaged ones to `workdir/checkpoints_damaged/<step>` (the resumed run saves those
steps again).
"""

import json
from typing import Any

from absl import logging

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
  tree = _item_tree(path)
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


class DamagedCheckpointError(RuntimeError):
  """No intact training checkpoint: every one in the workdir is damaged."""


def _item_tree(path):
  """The saved tree (metadata) of a PyTree item directory (FileNotFoundError if it is gone)."""
  if not epath.Path(path).is_dir():
    raise FileNotFoundError(f"the checkpoint item {path} is missing.")
  metadata = ocp.PyTreeCheckpointer().metadata(path)
  tree = getattr(metadata, "item_metadata", None) or metadata
  tree = getattr(tree, "tree", tree)
  if not jax.tree.leaves(tree):
    raise FileNotFoundError(f"the checkpoint item {path} has no readable metadata.")
  return tree


def _check_state_fits(saved_tree, abstract_state, where) -> None:
  """Raises ValueError unless the saved leaves have the shapes of the state's (as multisets:
  the saved tree names its nodes differently from the state's dataclasses)."""
  have = sorted(tuple(getattr(leaf, "shape", ())) for leaf in jax.tree.leaves(saved_tree))
  want = sorted(tuple(leaf.shape) for leaf in jax.tree.leaves(abstract_state))
  if have != want:
    raise ValueError(
        f"checkpoint {where} holds the state of another model ({len(have)} arrays, the model's "
        f"state {len(want)}; shapes only in the checkpoint {sorted(set(have) - set(want))[:5]}, "
        f"only in the model {sorted(set(want) - set(have))[:5]}). Train the changed model in a "
        "new workdir (or start it from these params with config.train.init_from).")


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

  def newest_config(self) -> tuple[int, dict[str, Any]] | None:
    """(step, config) of the newest checkpoint whose saved config is readable."""
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
      except (KeyError, ValueError, OSError):
        continue
      return step, restored.config
    return None

  def restore_latest(self, abstract_state) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, data iterator state) of the newest intact checkpoint; None if there are
    none. Damaged newer ones are logged and moved aside (see the module docstring).

    Raises:
      DamagedCheckpointError: no checkpoint restores (they are all left in place).
      ValueError: the newest restorable checkpoint holds arrays of other shapes (another model:
        orbax would restore them into the new shapes without a word).
    """
    directory = epath.Path(self.manager.directory)
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        saved_tree = _item_tree(directory / str(step) / "state")
        state, data = self.restore(step, abstract_state)
      except (KeyError, ValueError, OSError) as e:
        damaged.append((step, e))
        continue
      _check_state_fits(saved_tree, abstract_state, directory / str(step))
      if damaged:
        aside = directory.parent / "checkpoints_damaged"
        aside.mkdir(parents=True, exist_ok=True)
        for bad, error in damaged:
          target = aside / str(bad)
          while target.exists():
            target = aside / f"{target.name}_"
          (directory / str(bad)).rename(target)
          logging.warning("Checkpoint %s is damaged (%s: %.300s); moved to %s. Resuming from "
                          "the newest intact checkpoint, step %d.", directory / str(bad),
                          type(error).__name__, error, target, step)
        self.manager.reload()
      return step, state, data
    if damaged:
      raise DamagedCheckpointError(
          f"no checkpoint under {directory} restores (damaged, or of another model): " +
          "; ".join(f"step {st}: {type(e).__name__}: {str(e)[:200]}" for st, e in damaged) +
          ". Nothing was deleted; restore a copy, or train a changed model in a new workdir.")
    return None

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


def _checkpoint_steps(directory) -> list[int]:
  steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()] if directory.exists() \
      else []
  if not steps:
    raise FileNotFoundError(f"no training checkpoint under {directory}.")
  return sorted(steps)


def load_train_config(workdir, step: int | None = None) -> tuple[int, dict[str, Any]]:
  """(step, the config dict saved with a training checkpoint); `step=None`: the latest."""
  directory = _abspath(workdir) / "checkpoints"
  step = max(_checkpoint_steps(directory)) if step is None else step
  return step, ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(directory / str(step) /
                                                                    "config")


def load_train_arrays(workdir, step: int | None = None) -> tuple[int, dict[str, Any]]:
  """(step, the saved TrainState as a nested dict of numpy arrays), e.g. for sampling,
  comparisons and export; `step=None` reads the newest intact checkpoint (damaged newer ones
  are skipped with a warning, never changed)."""
  directory = _abspath(workdir) / "checkpoints"
  if step is not None:
    return step, _read_state(directory / str(step) / "state")
  damaged = []
  for step in sorted(_checkpoint_steps(directory), reverse=True):
    try:
      state = _read_state(directory / str(step) / "state")
    except (KeyError, ValueError, OSError) as e:
      logging.warning("Checkpoint %s is damaged (%s: %.300s); trying the one before.",
                      directory / str(step), type(e).__name__, e)
      damaged.append(step)
      continue
    if damaged:
      logging.warning("Using checkpoint %s, the newest intact one (damaged: %s).",
                      directory / str(step), damaged)
    return step, state
  raise DamagedCheckpointError(f"every checkpoint under {directory} is damaged ({damaged}).")


def _read_state(path) -> dict[str, Any]:
  tree = _item_tree(path)
  return ocp.PyTreeCheckpointer().restore(path, restore_args=_numpy_restore_args(tree))
