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
from typing import Any, Callable, Iterator, Sequence

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
IMAGE_TASK_SOURCES = ("synthetic", "arrays") + IMAGE_SOURCES  # images for the tokenizer task
DATA_FIELDS = ("source", "name", "split", "data_dir", "image_size", "random_flip", "num_workers",
               "synthetic_seed", "max_bad_images")


class TooManyBadImagesError(ValueError):
  """More distinct unreadable images than config.data.max_bad_images."""


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
    raise ValueError("config.data.source='arrays' needs train(..., dataset=(labels int32 "
                     "[N, h, w, D], class_labels int32 [N])).")
  if dataset is not None and data.source != "arrays":
    raise ValueError(f"a dataset was passed but config.data.source={data.source!r}; set it to "
                     "'arrays'.")
  if data.source in IMAGE_SOURCES and data.image_size != 16 * config.model.input_size:
    raise ValueError(f"config.data.image_size={data.image_size} must be 16 * "
                     f"config.model.input_size={config.model.input_size} (tokenizer stride 16).")
  if data.source in ("folder", "label_shards") and not data.data_dir:
    raise ValueError(f"config.data.data_dir must name the {data.source} location.")


def image_source(data: ml_collections.ConfigDict):
  """(random-access source, Map transforms) of the image sources tfds and folder; records
  {'image': uint8 [S, S, 3] ADM-cropped to data.image_size, 'class_labels': int32 [],
  'bad_index': int64 []}, bad images skipped (sources.SkipBadImages)."""
  if data.source == "tfds":
    return sources.SkipBadImages(sources.tfds_source(data.name, data.split, data.data_dir),
                                 data.image_size, label_key="label"), []
  if data.source == "folder":
    return sources.SkipBadImages(sources.ImageFolderSource(data.data_dir), data.image_size), []
  raise ValueError(f"config.data.source={data.source!r} is not one of {IMAGE_SOURCES}.")


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
  if data.source in IMAGE_SOURCES:
    return image_source(data)
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

  C2I label batches: {'labels': int32 [b, h, w, D], 'class_labels': int32 [b]}; image batches:
  {'image': uint8 [b, H, W, 3] (float32 in [-1, 1] for in-memory float images), ...}.
  `check` (if any) validates every batch before it is returned.

  Image sources mark the elements that replaced a bad image (`bad_index`, removed from the
  batch here): `bad_images` counts the distinct bad files this process met in this run, and more
  than `max_bad_images` (-1: no limit) raise TooManyBadImagesError naming them.
  """
  iterator: Any
  num_examples: int
  check: Callable[[dict[str, np.ndarray]], None] | None = None
  max_bad_images: int = -1
  name_of: Callable[[int], str] = str
  bad: set[int] = dataclasses.field(default_factory=set)

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  @property
  def bad_images(self) -> int:
    return len(self.bad)

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self.iterator)
    if "bad_index" in batch:
      self.bad.update(int(i) for i in batch.pop("bad_index") if i >= 0)
      if 0 <= self.max_bad_images < len(self.bad):
        names = [self.name_of(i) for i in sorted(self.bad)[:5]]
        raise TooManyBadImagesError(
            f"{len(self.bad)} unreadable or unusable training images (e.g. {names}; each is "
            f"logged), more than config.data.max_bad_images={self.max_bad_images}; repair or "
            "remove them, or raise the limit (-1: none).")
    if self.check is not None:
      self.check(batch)
    return batch

  def get_state(self) -> dict[str, Any]:
    return self.iterator.get_state()

  def set_state(self, state: dict[str, Any]) -> None:
    self.iterator.set_state(state)


def make_iterator(source, transforms: Sequence[Any], *, seed: int, global_batch: int,
                  rows: tuple[int, int] | None = None, num_workers: int = 0,
                  worker_processes: bool = False,
                  check: Callable[[dict[str, np.ndarray]], None] | None = None,
                  max_bad_images: int = -1) -> TrainIterator:
  """The shuffled, repeated, batched stream of a random-access source (see the module doc).

  Args:
    source: a grain random-access source (len, getitem) of dict records.
    transforms: grain Map / RandomMap transforms applied per element, in order.
    seed: shuffle and random-transform seed (the same on every process).
    global_batch: examples per global batch.
    rows: [start, stop) rows of each global batch for this process (default: `process_rows`).
    num_workers: grain read threads (at least 2) and, with `worker_processes`, processes.
    worker_processes: use `num_workers` worker processes (decode-heavy image sources).
    check: validates every batch (raises with a message naming the config field).
    max_bad_images: see TrainIterator (config.data.max_bad_images).
  """
  start, stop = rows or process_rows(global_batch)
  num_examples = len(source)
  if num_examples < global_batch:
    raise ValueError(f"the data set has {num_examples} examples, fewer than "
                     f"config.train.global_batch_size={global_batch}.")
  ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat()
  for transform in transforms:
    ds = (ds.random_map(transform) if isinstance(transform, grain.transforms.RandomMap)
          else ds.map(transform))
  ds = _ProcessRows(ds, global_batch, start, stop).batch(stop - start, drop_remainder=True)
  threads = max(int(num_workers), 2)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                               prefetch_buffer_size=threads))
  if worker_processes and num_workers > 0:
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=int(num_workers)))
  return TrainIterator(iter(it_ds), num_examples, check, int(max_bad_images),
                       getattr(source, "name_of", str))


def _image_transforms(data: ml_collections.ConfigDict) -> list[Any]:
  """The random flip if data.random_flip (image sources crop themselves)."""
  return [transforms.RandomFlip()] if data.random_flip else []


def _label_check(num_label_classes: int, num_classes: int):
  """Validates C2I batches: class labels in [0, num_classes), HBQ labels in [0, K)."""

  def check(batch):
    cls = batch["class_labels"]
    if cls.min() < 0 or cls.max() >= num_classes:
      raise ValueError(f"class labels must lie in [0, {num_classes}), got [{cls.min()}, "
                       f"{cls.max()}]; check config.model.num_classes against the data.")
    if "labels" in batch and (batch["labels"].min() < 0 or
                              batch["labels"].max() >= num_label_classes):
      raise ValueError(f"HBQ labels must lie in [0, {num_label_classes}), got "
                       f"[{batch['labels'].min()}, {batch['labels'].max()}]; check "
                       "config.model.label_mode/hbq_rounds.")

  return check


def build_train_iterator(config: ml_collections.ConfigDict, dataset=None,
                         rows: tuple[int, int] | None = None) -> TrainIterator:
  """The C2I training input of this process (labels, or images for the online tokenizer).

  Args:
    config: full C2I config (data, model, seed, train.global_batch_size).
    dataset: for data.source == 'arrays': (labels int32 [N, h, w, D], class_labels int32 [N]).
    rows: [start, stop) rows of each global batch for this process (default: `process_rows`).
  """
  validate_data_config(config, dataset)
  data, model = config.data, config.model
  source, fixups = build_source(config, dataset)
  is_image = data.source in IMAGE_SOURCES
  k = hbq.num_classes(model.hbq_rounds, model.label_mode)
  return make_iterator(source, fixups + (_image_transforms(data) if is_image else []),
                       seed=config.seed, global_batch=config.train.global_batch_size,
                       rows=rows, num_workers=data.num_workers, worker_processes=is_image,
                       check=_label_check(k, model.num_classes),
                       max_bad_images=data.max_bad_images)


def validate_image_data_config(config: ml_collections.ConfigDict, dataset=None) -> None:
  """config.data of an image-trained task (the tokenizer): fails naming the field."""
  data = config.data
  config_check.check_fields(data, "data", DATA_FIELDS)
  if data.source not in IMAGE_TASK_SOURCES:
    raise ValueError(f"config.data.source must be one of {IMAGE_TASK_SOURCES} for images, got "
                     f"{data.source!r}.")
  if (data.source == "arrays") != (dataset is not None):
    raise ValueError("config.data.source='arrays' goes with train(..., dataset=images [N, H, W, "
                     f"3]) and only with it; got source {data.source!r} and "
                     f"{'a' if dataset is not None else 'no'} dataset.")
  if data.image_size < 16 or data.image_size % 16:
    raise ValueError(f"config.data.image_size={data.image_size} must be a positive multiple "
                     "of 16 (tokenizer stride).")
  if data.source == "folder" and not data.data_dir:
    raise ValueError("config.data.data_dir must name the image folder.")


def build_image_iterator(config: ml_collections.ConfigDict, dataset=None,
                         rows: tuple[int, int] | None = None) -> TrainIterator:
  """Images of this process's rows of every global batch: {'image': [b, S, S, 3]}.

  Args:
    config: config with data, seed, train.global_batch_size, train.train_examples (the size of
      the synthetic source).
    dataset: for data.source == 'arrays': images [N, S, S, 3], uint8 or float in [-1, 1].
    rows: [start, stop) rows of each global batch for this process (default: `process_rows`).
  """
  validate_image_data_config(config, dataset)
  data = config.data
  if data.source == "synthetic":
    source, maps = sources.SyntheticImageSource(config.train.train_examples, data.image_size,
                                                seed=data.synthetic_seed), []
  elif data.source == "arrays":
    source, maps = sources.ArrayImageSource(dataset, data.image_size), []
  else:
    source, maps = image_source(data)
    maps = maps + _image_transforms(data)
  return make_iterator(source, maps, seed=config.seed,
                       global_batch=config.train.global_batch_size, rows=rows,
                       num_workers=data.num_workers, worker_processes=data.source in IMAGE_SOURCES,
                       max_bad_images=data.max_bad_images)
