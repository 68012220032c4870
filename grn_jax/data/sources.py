"""Random-access data sources (grain `RandomAccessDataSource` protocol: __len__, __getitem__).

C2I sources yield dicts with `class_labels` (int32 []) and either
  `labels`  int32 [h, w, D]   clean HBQ labels (synthetic, arrays; label shards come from
                              grn_jax/data/label_shards.py through `LabelShardRecord`), or
  `image`   uint8 [H, W, 3]   an RGB image of any size (tfds, folder), tokenized on the fly.
Image sources for the tokenizer task (`SyntheticImageSource`, `ArrayImageSource`, and tfds and
folder again) yield `image` at the training size: uint8, or float32 in [-1, 1] for float arrays.
"""

from typing import Any

from absl import logging
import grain
import numpy as np

from grn_jax.data import images as images_lib

# SkipBadImages tries at most this many consecutive files for one element.
MAX_CONSECUTIVE_BAD = 16


class SyntheticLabelSource:
  """Deterministic pseudo data: each class owns a fixed random label map, and every example
  replaces a random `noise_fraction` of its elements by uniform labels. Element i depends only on
  (seed, i), so any process can read any index.
  """

  def __init__(self, num_examples: int, shape: tuple[int, int, int], num_label_classes: int,
               num_classes: int, seed: int = 0, noise_fraction: float = 0.25):
    if num_examples < 1:
      raise ValueError(f"synthetic source needs num_examples >= 1, got {num_examples}.")
    self._n, self._shape = int(num_examples), tuple(int(s) for s in shape)
    self._k, self._classes, self._seed = int(num_label_classes), int(num_classes), int(seed)
    self._noise = float(noise_fraction)

  def __len__(self) -> int:
    return self._n

  def _template(self, cls: int) -> np.ndarray:
    rng = np.random.default_rng([self._seed, 1, cls])
    return rng.integers(0, self._k, self._shape, dtype=np.int32)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index) % self._n
    rng = np.random.default_rng([self._seed, 0, index])
    cls = int(rng.integers(0, self._classes))
    labels = self._template(cls)
    noise = rng.random(self._shape) < self._noise
    labels = np.where(noise, rng.integers(0, self._k, self._shape, dtype=np.int32), labels)
    return dict(labels=labels.astype(np.int32), class_labels=np.int32(cls))

  def __repr__(self) -> str:
    return f"SyntheticLabelSource(n={self._n}, shape={self._shape}, seed={self._seed})"


class ArrayLabelSource:
  """In-memory pre-tokenized data: labels int32 [N, h, w, D], class_labels int32 [N]."""

  def __init__(self, labels: np.ndarray, class_labels: np.ndarray):
    labels, class_labels = np.asarray(labels), np.asarray(class_labels)
    if labels.ndim != 4 or class_labels.shape != labels.shape[:1]:
      raise ValueError(f"dataset must be (labels [N, h, w, D], class_labels [N]), got shapes "
                       f"{labels.shape} and {class_labels.shape}.")
    if not (np.issubdtype(labels.dtype, np.integer) and
            np.issubdtype(class_labels.dtype, np.integer)):
      raise TypeError(f"dataset arrays must be integers, got {labels.dtype} and "
                      f"{class_labels.dtype}.")
    self._labels = labels.astype(np.int32)
    self._class_labels = class_labels.astype(np.int32)

  def __len__(self) -> int:
    return len(self._labels)

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index) % len(self._labels)
    return dict(labels=self._labels[index], class_labels=self._class_labels[index])

  def __repr__(self) -> str:
    return f"ArrayLabelSource(labels={self._labels.shape})"


class SyntheticImageSource:
  """Deterministic pseudo images: element i is a random 4 x 4 RGB pattern of (seed, i), each cell
  a flat square of side image_size / 4. uint8 [image_size, image_size, 3]."""

  CELLS = 4

  def __init__(self, num_examples: int, image_size: int, seed: int = 0):
    if num_examples < 1 or image_size < 1 or image_size % self.CELLS:
      raise ValueError(f"synthetic images need num_examples >= 1 and an image_size divisible "
                       f"by {self.CELLS}, got {num_examples} and {image_size}.")
    self._n, self._size, self._seed = int(num_examples), int(image_size), int(seed)

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> dict[str, Any]:
    rng = np.random.default_rng([self._seed, 2, int(index) % self._n])
    cells = rng.integers(0, 256, (self.CELLS, self.CELLS, 3), dtype=np.uint8)
    scale = self._size // self.CELLS
    return dict(image=np.repeat(np.repeat(cells, scale, axis=0), scale, axis=1))

  def __repr__(self) -> str:
    return f"SyntheticImageSource(n={self._n}, size={self._size}, seed={self._seed})"


class ArrayImageSource:
  """In-memory images [N, S, S, 3] or clips [N, T, S, S, 3]: uint8, or float in [-1, 1] (kept
  as float32)."""

  def __init__(self, images: np.ndarray, image_size: int):
    images = np.asarray(images)
    if images.ndim not in (4, 5) or images.shape[-3:] != (image_size, image_size, 3):
      raise ValueError(f"dataset must be images [N, {image_size}, {image_size}, 3] or clips "
                       f"[N, T, {image_size}, {image_size}, 3] (config.data.image_size="
                       f"{image_size}), got shape {images.shape}.")
    if np.issubdtype(images.dtype, np.floating):
      low, high = float(images.min()), float(images.max())
      if not (np.isfinite(low) and np.isfinite(high)) or low < -1.0 - 1e-6 or high > 1.0 + 1e-6:
        raise ValueError(f"float dataset images must lie in [-1, 1], got [{low}, {high}].")
      images = images.astype(np.float32)
    elif images.dtype != np.uint8:
      raise TypeError(f"dataset images must be uint8 or float in [-1, 1], got {images.dtype}.")
    self._images = images

  def __len__(self) -> int:
    return len(self._images)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return dict(image=self._images[int(index) % len(self._images)])

  def __repr__(self) -> str:
    return f"ArrayImageSource(images={self._images.shape}, {self._images.dtype})"


class ImageFolderSource:
  """`root/<class name>/<image>` (grn_jax.data.images.list_image_folder: sorted class folders,
  extensions matched case-insensitively); decoded by images.load_image, the decode path of
  tokenize_dataset, which raises ImageDecodeError for an unreadable file."""

  def __init__(self, root: str):
    try:
      self._files, self.classes = images_lib.list_image_folder(root)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"config.data.data_dir: {e}") from e

  def __len__(self) -> int:
    return len(self._files)

  def name_of(self, index: int) -> str:
    return self._files[int(index) % len(self._files)][0]

  def __getitem__(self, index: int) -> dict[str, Any]:
    path, label = self._files[int(index) % len(self._files)]
    return dict(image=images_lib.load_image(path), class_labels=np.int32(label))

  def __repr__(self) -> str:
    return f"ImageFolderSource({len(self._files)} images, {len(self.classes)} classes)"


class SkipBadImages:
  """An image source whose unreadable or unusable images are skipped: element i is the ADM
  crop (image_size) of the first good record among i, i + 1, ... (deterministic, so resumes and
  processes agree), with `bad_index` int64 [] = the first skipped index or -1. Each skip is
  logged; the train iterator counts them (pipeline.TrainIterator.bad_images).

  Records are {'image', <label_key>} (tfds: 'label'); elements {'image' uint8 [S, S, 3],
  'class_labels' int32 [], 'bad_index' int64 []}.
  """

  def __init__(self, parent, image_size: int, label_key: str = "class_labels"):
    self._parent, self._size, self._label_key = parent, int(image_size), label_key

  def __len__(self) -> int:
    return len(self._parent)

  def name_of(self, index: int) -> str:
    name_of = getattr(self._parent, "name_of", None)  # tfds sources have no file names
    return name_of(index) if name_of else f"example {int(index)}"

  def __getitem__(self, index: int) -> dict[str, Any]:
    n, first_bad = len(self._parent), -1
    for j in range(int(index), int(index) + MAX_CONSECUTIVE_BAD):
      try:
        record = self._parent[j % n]
        image = images_lib.center_crop_adm(
            images_lib.to_uint8_rgb(record["image"], self.name_of(j % n)), self._size)
        return dict(image=image, class_labels=np.int32(record[self._label_key]),
                    bad_index=np.int64(first_bad))
      except images_lib.ImageDecodeError as e:
        logging.warning("skipping a bad training image: %s", e)
        first_bad = j % n if first_bad < 0 else first_bad
    raise images_lib.ImageDecodeError(
        f"{MAX_CONSECUTIVE_BAD} consecutive unreadable images from {self.name_of(index)} on; "
        "is the data set damaged?")

  def __repr__(self) -> str:
    return f"SkipBadImages({self._parent!r}, size={self._size})"


def tfds_source(name: str, split: str, data_dir: str | None,
                folder_option: str = "config.data.source='folder'"):
  """tfds random-access source (ArrayRecord); elements {'image': uint8, 'label': int}.

  `folder_option` is how the caller's user picks an image folder instead (named in the error).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir or None)
  except Exception as e:  # tfds raises several types for "not prepared" / offline.
    hint = ""
    if name.startswith("imagenet2012"):
      hint = (" ImageNet needs a manual download: put the ILSVRC2012 tars in a folder and run "
              f"`tfds build {name} --manual_dir=FOLDER` (array_record format), or use "
              f"{folder_option} with an ImageFolder tree.")
    raise RuntimeError(f"tfds data set {name!r} (split {split!r}, data_dir {data_dir!r}) is not "
                       f"available: {e}.{hint}") from e


class LabelShardRecord(grain.transforms.Map):
  """LabelShardSource record (ind labels, `class_label`) -> trainer element in `label_mode`."""

  def __init__(self, label_mode: str, hbq_rounds: int):
    self.label_mode, self.hbq_rounds = label_mode, int(hbq_rounds)

  def map(self, element):
    labels = np.asarray(element["labels"], np.int32)
    if self.label_mode == "bit":
      # ind -> bit, round-major (label j = round * d + channel), first round = MSB.
      shifts = np.arange(self.hbq_rounds - 1, -1, -1, dtype=np.int32)
      bits = (labels[..., None, :] >> shifts[:, None]) & 1  # [h, w, M, d]
      labels = bits.reshape(*labels.shape[:-1], self.hbq_rounds * labels.shape[-1])
    return dict(labels=labels.astype(np.int32), class_labels=np.int32(element["class_label"]))
