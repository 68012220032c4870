"""Deterministic, checkpointable, multi-process input pipeline (grain).

  source -> seed -> shuffle (reseeded every epoch) -> repeat -> per-example transforms
         -> this process's rows of every global batch -> batch -> prefetch

Element k of the global stream is the same on every host and after a restart, and global batch
s holds stream elements [s * B, (s + 1) * B). A process reads only the rows of each global
batch that its devices hold (`process_rows`), so `jax.make_array_from_process_local_data`
assembles exactly global batch s on any number of processes. Random transforms are seeded by the
global element index, so they too do not depend on the process count.

The iterator state (grain's `next_index`, i.e. the number of batches consumed) is what the
trainer checkpoints.
"""

import dataclasses
import sys
from typing import Any, Iterator

import grain
import jax
import ml_collections
import numpy as np

from grn_jax import config_check
from grn_jax import hbq
from grn_jax.data import label_shards
from grn_jax.data import sources
from grn_jax.data import transforms

LABEL_SOURCES = ("synthetic", "arrays", "label_shards")
IMAGE_SOURCES = ("tfds", "folder")
SOURCES = LABEL_SOURCES + IMAGE_SOURCES
DATA_FIELDS = ("source", "name", "split", "data_dir", "image_size", "random_flip", "num_workers",
               "synthetic_seed")


def label_shape(model_cfg: ml_collections.ConfigDict) -> tuple[int, int, int]:
  """(h, w, D) of the clean labels the model trains on."""
  d = hbq.num_labels(model_cfg.latent_dim, model_cfg.hbq_rounds, model_cfg.label_mode)
  return (model_cfg.input_size, model_cfg.input_size, d)


def validate_data_config(config: ml_collections.ConfigDict, dataset=None) -> None:
  """Fails at start-up with a message naming the field."""
  data = config.data
  config_check.check_fields(data, "data", DATA_FIELDS)
  if data.source not in SOURCES:
    raise ValueError(f"config.data.source must be one of {SOURCES}, got {data.source!r}.")
  if data.source == "arrays" and dataset is None:
    raise ValueError("config.data.source='arrays' needs train_and_evaluate(..., dataset=(labels "
                     "int32 [N, h, w, D], class_labels int32 [N])).")
  if dataset is not None and data.source != "arrays":
    raise ValueError(f"a dataset was passed but config.data.source={data.source!r}; set it to "
                     "'arrays'.")
  if data.source in IMAGE_SOURCES and data.image_size != 16 * config.model.input_size:
    raise ValueError(f"config.data.image_size={data.image_size} must be 16 * "
                     f"config.model.input_size={config.model.input_size} (tokenizer stride 16).")
  if data.source in ("folder", "label_shards") and not data.data_dir:
    raise ValueError(f"config.data.data_dir must name the {data.source} location.")


def build_source(config: ml_collections.ConfigDict, dataset=None):
  """(random-access source, list of grain Map transforms that normalise its records)."""
  data, model = config.data, config.model
  if data.source == "synthetic":
    return sources.SyntheticLabelSource(
        config.train.train_examples, label_shape(model),
        hbq.num_classes(model.hbq_rounds, model.label_mode), model.num_classes,
        seed=data.synthetic_seed), []
  if data.source == "arrays":
    return sources.ArrayLabelSource(*dataset), []
  if data.source == "label_shards":
    return (label_shards.LabelShardSource(data.data_dir),
            [sources.LabelShardRecord(model.label_mode, model.hbq_rounds)])
  if data.source == "tfds":
    return sources.tfds_source(data.name, data.split, data.data_dir), [sources.RenameTfdsKeys()]
  if data.source == "folder":
    return sources.ImageFolderSource(data.data_dir), []
  raise ValueError(f"config.data.source={data.source!r} is not one of {SOURCES}.")


def process_rows(global_batch: int, sharding: jax.sharding.Sharding | None = None
                 ) -> tuple[int, int]:
  """[start, stop) rows of every global batch that this process's devices hold."""
  if sharding is None:
    count, index = jax.process_count(), jax.process_index()
    if global_batch % count:
      raise ValueError(f"global batch {global_batch} is not divisible by {count} processes.")
    local = global_batch // count
    return index * local, (index + 1) * local
  indices = sharding.addressable_devices_indices_map((global_batch,))
  rows = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop)
                 for s in indices.values()})
  start, stop = rows[0][0], rows[-1][1]
  covered = sum(b - a for a, b in rows)
  if covered != stop - start or any(b[0] != a[1] for a, b in zip(rows, rows[1:])):
    raise ValueError(f"this process's devices hold non-contiguous batch rows {rows}; use a mesh "
                     "whose batch axes are process-major (sharding.make_mesh does this).")
  return start, stop


class _ProcessRows(grain.MapDataset):
  """Element i -> parent[(i // local) * global + start + i % local]."""

  def __init__(self, parent: grain.MapDataset, global_batch: int, start: int, stop: int):
    super().__init__(parent)
    self._global, self._start, self._local = global_batch, start, stop - start

  def __len__(self) -> int:
    n = len(self._parent)
    return sys.maxsize if n >= sys.maxsize else (n // self._global) * self._local

  def __str__(self) -> str:
    return f"ProcessRows(global={self._global}, start={self._start}, local={self._local})"

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    step, offset = divmod(index, self._local)
    return self._parent[step * self._global + self._start + offset]


@dataclasses.dataclass
class TrainIterator:
  """Yields this process's share of each global batch (numpy), with checkpointable state.

  Label batches: {'labels': int32 [b, h, w, D], 'class_labels': int32 [b]};
  image batches: {'image': uint8 [b, H, W, 3], 'class_labels': int32 [b]}.
  """
  iterator: Any
  needs_tokenizer: bool
  num_examples: int
  label_range: tuple[int, int]    # (K label classes, image classes) for input validation

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self.iterator)
    k, classes = self.label_range
    cls = batch["class_labels"]
    if cls.min() < 0 or cls.max() >= classes:
      raise ValueError(f"class labels must lie in [0, {classes}), got [{cls.min()}, "
                       f"{cls.max()}]; check config.model.num_classes against the data.")
    if "labels" in batch and (batch["labels"].min() < 0 or batch["labels"].max() >= k):
      raise ValueError(f"HBQ labels must lie in [0, {k}), got [{batch['labels'].min()}, "
                       f"{batch['labels'].max()}]; check config.model.label_mode/hbq_rounds.")
    return batch

  def get_state(self) -> dict[str, Any]:
    return self.iterator.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self.iterator.set_state(state)


def build_train_iterator(config: ml_collections.ConfigDict, dataset=None,
                         rows: tuple[int, int] | None = None) -> TrainIterator:
  """The training input of this process.

  Args:
    config: full config (data, model, seed, train.global_batch_size).
    dataset: for data.source == 'arrays': (labels int32 [N, h, w, D], class_labels int32 [N]).
    rows: [start, stop) rows of each global batch for this process (default: `process_rows`).
  """
  validate_data_config(config, dataset)
  data, model = config.data, config.model
  global_batch = config.train.global_batch_size
  start, stop = rows or process_rows(global_batch)
  source, fixups = build_source(config, dataset)
  num_examples = len(source)
  if num_examples < global_batch:
    raise ValueError(f"the data set has {num_examples} examples, fewer than "
                     f"config.train.global_batch_size={global_batch}.")
  ds = grain.MapDataset.source(source).seed(config.seed)
  ds = ds.shuffle().repeat()
  for fix in fixups:
    ds = ds.map(fix)
  needs_tokenizer = data.source in IMAGE_SOURCES
  if needs_tokenizer:
    ds = ds.map(transforms.CenterCrop(data.image_size))
    if data.random_flip:
      ds = ds.random_map(transforms.RandomFlip())
  ds = _ProcessRows(ds, global_batch, start, stop).batch(stop - start, drop_remainder=True)
  workers = int(data.num_workers)
  threads = max(workers, 2)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                               prefetch_buffer_size=threads))
  if workers > 0 and needs_tokenizer:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  k = hbq.num_classes(model.hbq_rounds, model.label_mode)
  return TrainIterator(iter(it_ds), needs_tokenizer, num_examples, (k, model.num_classes))
