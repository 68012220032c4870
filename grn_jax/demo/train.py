"""The digits demo's training stages, both runs of the one training loop (trainers/loop.py).

  tokenizer  the tokenizer task on the digits in memory -> workdir/tokenizer_train/checkpoints;
             its sections: config.tokenizer_train.{train, optim, reconstruction}, with the
             demo's seed, tokenizer, data, mesh and the GRN's hbq_rounds
  GRN        the C2I task on the digits' HBQ labels in memory -> workdir/checkpoints

Each resumes from its checkpoints like any run of the loop; a tqdm bar follows the steps. A stop
signal (SIGTERM, SIGINT) saves and raises grn_jax.preemption.Interrupted: the demo stops there and
resumes when run again.
"""

import os
from typing import Any

import jax
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax.trainers import c2i as c2i_task
from grn_jax.trainers import loop
from grn_jax.trainers import state as state_lib
from grn_jax.trainers import tokenizer as tokenizer_task

TOKENIZER_TRAIN_SECTIONS = ("train", "optim", "reconstruction")
# config.tokenizer_train.reconstruction: the task's fields but hbq_rounds (the GRN's).
RECONSTRUCTION_FIELDS = tuple(f for f in tokenizer_task.RECONSTRUCTION_FIELDS
                              if f != "hbq_rounds")
TOKENIZER_RUN = "tokenizer_train"   # the tokenizer run's workdir, inside the demo's
TOKENIZER_METRICS = ("loss", "l1", "l2", "grad_norm")


def tokenizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The demo's tokenizer-task config (configs/tokenizer.py layout)."""
  sections = config.tokenizer_train
  config_check.check_fields(sections, "tokenizer_train", TOKENIZER_TRAIN_SECTIONS)
  config_check.check_fields(sections.reconstruction, "tokenizer_train.reconstruction",
                            RECONSTRUCTION_FIELDS)
  return ml_collections.ConfigDict(dict(
      task="tokenizer", mode="train", seed=config.seed, tokenizer=config.tokenizer.to_dict(),
      data=config.data.to_dict(), train=sections.train.to_dict(),
      optim=sections.optim.to_dict(),
      reconstruction=dict(sections.reconstruction.to_dict(), hbq_rounds=config.model.hbq_rounds),
      mesh=config.mesh.to_dict(), sharding_rules=config.sharding_rules))


def validate_tokenizer_sections(config: ml_collections.ConfigDict) -> None:
  """config.tokenizer_train, checked as the tokenizer task's config it makes."""
  try:
    tokenizer_task.validate_config(tokenizer_config(config))
  except ValueError as e:
    raise ValueError(f"config.tokenizer_train (the demo's tokenizer run; train, optim and "
                     f"reconstruction): {e}") from e


def grn_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The demo's C2I-task config: its C2I sections, without the demo-only ones."""
  return ml_collections.ConfigDict({k: config[k] for k in c2i_task.CONFIG_FIELDS})


def tokenizer_steps(config: ml_collections.ConfigDict, num_images: int) -> int:
  return state_lib.total_steps(tokenizer_config(config), num_images)


def grn_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  return state_lib.total_steps(config, num_examples)


class ProgressBar:
  """A loop hook: moves a tqdm bar every step and keeps the last flushed metrics."""

  def __init__(self, desc: str, total: int):
    from tqdm import auto as tqdm  # pylint: disable=g-import-not-at-top
    self.bar = tqdm.tqdm(total=total, desc=desc, unit="step")
    self.scalars: dict[str, float] | None = None
    self.evaluations: list[dict[str, float]] = []   # step and the eval/... scalars

  def __call__(self, step: int, scalars: dict[str, float] | None) -> None:
    self.bar.update(step - self.bar.n)
    if scalars and "loss" in scalars:
      self.scalars = scalars
      self.bar.set_postfix(loss=f"{scalars['loss']:.4f}")
    evaluation = {k: v for k, v in (scalars or {}).items() if k.startswith("eval/")}
    if evaluation:
      self.evaluations.append(dict(step=step, **evaluation))

  def close(self) -> None:
    self.bar.update(self.bar.total - self.bar.n)
    self.bar.close()


def train_tokenizer(config: ml_collections.ConfigDict, workdir: str, images: np.ndarray
                    ) -> tuple[Any, dict[str, float] | None]:
  """Trains (or resumes) the demo's tokenizer on `images` float32 [N, H, W, 3] in [-1, 1].

  Returns:
    (params as numpy, the last logged loss, l1, l2 and grad_norm; None if nothing was trained).
  """
  run = tokenizer_config(config)
  bar = ProgressBar("tokenizer", state_lib.total_steps(run, len(images)))
  try:
    run_dir = os.path.join(workdir, TOKENIZER_RUN)
    state = loop.fit(run, run_dir, dataset=images, hooks=[bar]).raise_if_stopped(run_dir)
  finally:
    bar.close()
  metrics = None if bar.scalars is None else {k: bar.scalars[k] for k in TOKENIZER_METRICS}
  return jax.device_get(state.params), metrics


def train_grn(config: ml_collections.ConfigDict, workdir: str, labels: np.ndarray,
              classes: np.ndarray) -> tuple[state_lib.TrainState, list[dict[str, float]]]:
  """Trains (or resumes) the demo's GRN on labels int32 [N, h, w, D], classes int32 [N].

  Returns:
    (the final TrainState, the training-time evaluations of this call: dicts of step and the
    eval/... scalars, empty when config.train.eval_every_steps is 0).
  """
  run = grn_config(config)
  bar = ProgressBar("GRN", grn_steps(run, len(labels)))
  try:
    state = loop.fit(run, workdir, dataset=(labels, classes),
                     hooks=[bar]).raise_if_stopped(workdir)
  finally:
    bar.close()
  return state, bar.evaluations
