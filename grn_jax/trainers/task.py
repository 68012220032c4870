"""What a model family gives the training loop: the `Task` protocol and the task registry.

  task = make_task(config)      # the Task of config.task, after its config check

A family's task (grn_jax/trainers/c2i.py, tokenizer.py, t2iv.py) is a class built from the whole config
that says how to init the params, the pure loss, the step's batch (shapes, dtypes and logical
axes), the input iterator, how a host batch becomes the global device batch, its metrics and
its sampling hook. grn_jax/trainers/loop.py does everything else, the same for every family.
"""

import importlib
from typing import Any, Callable, Protocol, Sequence

from clu import metrics as clu_metrics
import jax
import ml_collections
import numpy as np

from grn_jax.data import pipeline
from grn_jax.trainers import state as state_lib

# config.task -> "module:Task class". A new family adds one line.
TASKS = {
    "c2i": "grn_jax.trainers.c2i:C2ITask",
    "tokenizer": "grn_jax.trainers.tokenizer:TokenizerTask",
    "t2i": "grn_jax.trainers.t2iv:T2IVTask",
    "t2v": "grn_jax.trainers.t2iv:T2IVTask",
}

BatchSpec = dict[str, tuple[jax.ShapeDtypeStruct, tuple[str | None, ...]]]
SampleHook = Callable[[state_lib.TrainState, dict[str, jax.Array]], dict[str, np.ndarray]]


class Task(Protocol):
  """What a model family gives the loop (constructed from the whole config)."""
  param_groups: state_lib.ParamGroups    # frozen and no-decay leaf names
  metrics: type[clu_metrics.Collection]  # built from the `outputs` of `loss`, every step
  tokens_per_example: int                # for the tokens/s rate
  compute_dtype: str                     # the dtype of the MFU's measured matmul peak

  @staticmethod
  def validate_config(config: ml_collections.ConfigDict,
                      extra_sections: Sequence[str] = ()) -> None:
    """Every section the family reads; errors name the field."""

  def init_params(self, key: jax.Array, batch_size: int) -> Any:
    """Params (boxed with logical axes), traced inside the jitted init; `batch_size` is the
    number of batch shards, a batch the init inputs may use."""

  def batch_spec(self) -> BatchSpec:
    """The step's global batch: name -> (ShapeDtypeStruct, logical axis names)."""

  def loss(self, params: Any, batch: dict[str, jax.Array], key: jax.Array
           ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Pure: (float32 [] loss to minimise, outputs for `metrics`)."""

  def input_iterator(self, dataset: Any, rows: tuple[int, int]) -> pipeline.TrainIterator:
    """This process's rows [start, stop) of every global batch, as numpy."""

  def make_prepare(self, mesh: jax.sharding.Mesh, shardings: dict[str, jax.sharding.Sharding]
                   ) -> Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]:
    """Host batch of this process -> the global device batch of `batch_spec`."""

  def model_flops_per_example(self) -> float | None:
    """Model FLOPs of one training example; None: the compiler's count of the step is used."""

  def sample_hook(self) -> SampleHook | None:
    """(state, device batch) -> images to write, or None for no sampling."""


def task_class(name: str) -> type:
  """The Task class registered for config.task == name (ValueError naming the known ones)."""
  if name not in TASKS:
    raise ValueError(f"config.task={name!r} is not a training task; known tasks: "
                     f"{', '.join(TASKS)}.")
  module, cls = TASKS[name].split(":")
  return getattr(importlib.import_module(module), cls)


def make_task(config: ml_collections.ConfigDict) -> Task:
  """The task of config.task, after checking every section it reads."""
  cls = task_class(config.task)
  cls.validate_config(config)
  return cls(config)
