"""Random-access data sources (grain `RandomAccessDataSource` protocol: __len__, __getitem__).

Every source yields dicts with `class_labels` (int32 []) and either
  `labels`  int32 [h, w, D]   clean HBQ labels (synthetic, arrays; label shards come from
                              grn_jax/data/label_shards.py through `LabelShardRecord`), or
  `image`   uint8 [H, W, 3]   an RGB image of any size (tfds, folder), tokenized on the fly.
"""

from typing import Any

import grain
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


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


class ImageFolderSource:
  """`root/<class name>/<image>`; classes are the sorted sub-folder names (torchvision
  ImageFolder order, as the official training script)."""

  def __init__(self, root: str):
    from etils import epath  # pylint: disable=g-import-not-at-top
    root_path = epath.Path(root)
    if not root_path.is_dir():
      raise FileNotFoundError(f"config.data.data_dir={root!r} is not a folder of class "
                              "sub-folders.")
    self.classes = sorted(p.name for p in root_path.iterdir() if p.is_dir())
    self._files: list[tuple[str, int]] = []
    for idx, name in enumerate(self.classes):
      files = sorted(str(f) for f in (root_path / name).iterdir()
                     if f.name.endswith(IMAGE_EXTENSIONS))
      self._files.extend((f, idx) for f in files)
    if not self._files:
      raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS[:5])}) under class "
                              f"sub-folders of {root!r}.")

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> dict[str, Any]:
    from etils import epath  # pylint: disable=g-import-not-at-top
    from PIL import Image  # pylint: disable=g-import-not-at-top
    path, label = self._files[int(index) % len(self._files)]
    with epath.Path(path).open("rb") as f:
      image = np.asarray(Image.open(f).convert("RGB"))
    return dict(image=image, class_labels=np.int32(label))

  def __repr__(self) -> str:
    return f"ImageFolderSource({len(self._files)} images, {len(self.classes)} classes)"


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


class RenameTfdsKeys(grain.transforms.Map):
  """{'image', 'label'} -> {'image', 'class_labels'} (grain MapTransform)."""

  def map(self, element):
    return dict(image=np.asarray(element["image"]), class_labels=np.int32(element["label"]))


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
