"""Pre-tokenized HBQ labels on disk: array_record shards plus one JSON metadata file per shard.

Layout of a data set directory (written by `python -m grn_jax.data.tokenize_dataset`):

  labels-00000-of-00008.array_record        one record per example
  labels-00000-of-00008.json                shard metadata (written last: marks the shard done)
  ...
  dataset.json                              summary of all shards (informational)

Record layout (little-endian, sizes fixed by the metadata, so a record of any other length is
reported as corrupt):

  b"GRNL"  | int32 class label | uint8 labels [h, w, d] ('ind' mode) | float16 latent [h, w, d]?

Labels are stored in the 'ind' label mode (one label per latent channel, 2^hbq_rounds classes,
hence hbq_rounds <= 8 for uint8); the trainer converts to 'bit' on the fly when asked. The
float16 tokenizer latent is stored only when the shard was written with latents.

Shards are written to a temporary name and renamed, metadata last, so a killed writer never leaves
a file that looks complete.
"""

import bisect
import dataclasses
import glob
import json
import os
import re
import struct
from typing import Any, Iterable, Sequence

import numpy as np

FORMAT_VERSION = 1
MAGIC = b"GRNL"
SHARD_SUFFIX = ".array_record"
METADATA_SUFFIX = ".json"
DATASET_METADATA = "dataset.json"
_HEADER = struct.Struct("<4si")  # magic, class label
_SHARD_RE = re.compile(r"-(\d{5,})-of-(\d{5,})$")


class ShardFormatError(ValueError):
  """A shard or its metadata is missing, corrupt, or inconsistent with the other shards."""


@dataclasses.dataclass(frozen=True)
class ShardMetadata:
  """What one shard holds. Shapes: labels uint8 [h, w, d], latent float16 [h, w, d]."""
  h: int
  w: int
  d: int
  hbq_rounds: int
  num_examples: int
  has_latents: bool = False
  source: str = ""
  label_mode: str = "ind"
  format_version: int = FORMAT_VERSION
  # Inputs that could not be read, as [path or id, reason]; informational.
  skipped: tuple[tuple[str, str], ...] = ()
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)

  # Fields that must agree between the shards of one data set.
  LAYOUT_FIELDS = ("h", "w", "d", "hbq_rounds", "has_latents", "label_mode", "format_version")

  def layout(self) -> dict[str, Any]:
    return {f: getattr(self, f) for f in self.LAYOUT_FIELDS}

  def record_size(self) -> int:
    """Bytes of one record."""
    n = self.h * self.w * self.d
    return _HEADER.size + n + (2 * n if self.has_latents else 0)

  def to_json(self) -> str:
    out = dataclasses.asdict(self)
    out["skipped"] = [list(s) for s in self.skipped]
    return json.dumps(out, indent=1, sort_keys=True)

  @classmethod
  def from_json(cls, text: str, where: str = "") -> "ShardMetadata":
    try:
      raw = json.loads(text)
    except json.JSONDecodeError as e:
      raise ShardFormatError(f"metadata {where} is not valid JSON ({e}).") from e
    names = {f.name for f in dataclasses.fields(cls)}
    required = {"h", "w", "d", "hbq_rounds", "num_examples"}
    if not isinstance(raw, dict) or not required <= set(raw):
      missing = sorted(required - set(raw)) if isinstance(raw, dict) else sorted(required)
      raise ShardFormatError(f"metadata {where} lacks fields {missing}.")
    unknown = sorted(set(raw) - names)
    if unknown:
      raise ShardFormatError(f"metadata {where} has unknown fields {unknown}; it was written by "
                             "a newer grn_jax or is not a label shard metadata file.")
    raw["skipped"] = tuple(tuple(s) for s in raw.get("skipped", ()))
    meta = cls(**raw)
    meta.validate(where)
    return meta

  def validate(self, where: str = "") -> None:
    for name in ("h", "w", "d"):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
        raise ShardFormatError(f"metadata {where}: {name}={getattr(self, name)!r} must be a "
                               "positive integer.")
    if not isinstance(self.hbq_rounds, int) or not 1 <= self.hbq_rounds <= 8:
      raise ShardFormatError(f"metadata {where}: hbq_rounds={self.hbq_rounds!r} must be in "
                             "[1, 8] (labels are stored as uint8).")
    if not isinstance(self.num_examples, int) or self.num_examples < 0:
      raise ShardFormatError(f"metadata {where}: num_examples={self.num_examples!r} must be a "
                             "non-negative integer.")
    if self.label_mode != "ind":
      raise ShardFormatError(f"metadata {where}: label_mode={self.label_mode!r}; shards store "
                             "'ind' labels.")
    if self.format_version != FORMAT_VERSION:
      raise ShardFormatError(f"metadata {where}: format_version={self.format_version}, this "
                             f"grn_jax reads version {FORMAT_VERSION}.")


def shard_filename(index: int, num_shards: int, prefix: str = "labels") -> str:
  """'labels-00003-of-00008.array_record'."""
  if not 0 <= index < num_shards:
    raise ValueError(f"shard index {index} must be in [0, {num_shards}).")
  return f"{prefix}-{index:05d}-of-{num_shards:05d}{SHARD_SUFFIX}"


def metadata_path(shard_path: str) -> str:
  """The metadata JSON next to a shard: X.array_record -> X.json."""
  if not shard_path.endswith(SHARD_SUFFIX):
    raise ValueError(f"label shards end in {SHARD_SUFFIX!r}, got {shard_path!r}.")
  return shard_path[:-len(SHARD_SUFFIX)] + METADATA_SUFFIX


def encode_record(labels: np.ndarray, class_label: int, latent: np.ndarray | None = None,
                  hbq_rounds: int = 4) -> bytes:
  """One example -> record bytes. labels int [h, w, d] in [0, 2^hbq_rounds), latent [h, w, d]."""
  labels = np.asarray(labels)
  if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be integers [h, w, d], got {labels.dtype} {labels.shape}.")
  if labels.size and (labels.min() < 0 or labels.max() >= 2**hbq_rounds):
    raise ValueError(f"labels must be in [0, {2**hbq_rounds}) for hbq_rounds={hbq_rounds}, got "
                     f"[{labels.min()}, {labels.max()}].")
  parts = [_HEADER.pack(MAGIC, int(class_label)), labels.astype(np.uint8).tobytes()]
  if latent is not None:
    latent = np.asarray(latent)
    if latent.shape != labels.shape:
      raise ValueError(f"latent shape {latent.shape} != labels shape {labels.shape}.")
    parts.append(latent.astype("<f2").tobytes())
  return b"".join(parts)


def decode_record(data: bytes, meta: ShardMetadata, where: str = "") -> dict[str, np.ndarray]:
  """Record bytes -> dict(labels int32 [h,w,d], class_label int32 [], latent float32 [h,w,d]?)."""
  if len(data) != meta.record_size():
    raise ShardFormatError(f"corrupt record {where}: {len(data)} bytes, the metadata "
                           f"(h={meta.h}, w={meta.w}, d={meta.d}, has_latents="
                           f"{meta.has_latents}) implies {meta.record_size()}.")
  magic, class_label = _HEADER.unpack_from(data)
  if magic != MAGIC:
    raise ShardFormatError(f"corrupt record {where}: bad magic {magic!r} (expected {MAGIC!r}).")
  shape = (meta.h, meta.w, meta.d)
  n = meta.h * meta.w * meta.d
  labels = np.frombuffer(data, np.uint8, n, _HEADER.size).reshape(shape)
  if labels.max() >= 2**meta.hbq_rounds:
    raise ShardFormatError(f"corrupt record {where}: label {labels.max()} >= 2^hbq_rounds="
                           f"{2**meta.hbq_rounds}.")
  out = dict(labels=labels.astype(np.int32), class_label=np.int32(class_label))
  if meta.has_latents:
    latent = np.frombuffer(data, "<f2", n, _HEADER.size + n).reshape(shape)
    out["latent"] = latent.astype(np.float32)
  return out


def _atomic_write_text(path: str, text: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def write_records(path: str, labels: np.ndarray | Sequence[np.ndarray],
                  class_labels: np.ndarray | Sequence[int],
                  latents: np.ndarray | Sequence[np.ndarray] | None = None, *,
                  hbq_rounds: int, source: str = "",
                  skipped: Iterable[tuple[str, str]] = (),
                  extra: dict[str, Any] | None = None) -> ShardMetadata:
  """Writes one complete shard and its metadata (atomically: temp files, then renames).

  Args:
    path: the shard path, ending in '.array_record' (see `shard_filename`).
    labels: int [N, h, w, d] 'ind' HBQ labels in [0, 2^hbq_rounds).
    class_labels: int [N].
    latents: optional float [N, h, w, d] tokenizer latents (stored as float16).
    hbq_rounds: HBQ rounds M of the labels (<= 8).
    source: free text describing the input (e.g. 'tfds:imagenet2012/train').
    skipped: (path or id, reason) of inputs of this shard that could not be read.
    extra: more JSON-serialisable metadata (e.g. the image range of this shard).

  Returns:
    The shard's metadata.
  """
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  labels = np.asarray(labels)
  class_labels = np.asarray(class_labels)
  if labels.ndim != 4:
    raise ValueError(f"labels must be [N, h, w, d], got {labels.shape}.")
  if class_labels.shape != labels.shape[:1]:
    raise ValueError(f"class_labels must be [N={labels.shape[0]}], got {class_labels.shape}.")
  if latents is not None:
    latents = np.asarray(latents)
    if latents.shape != labels.shape:
      raise ValueError(f"latents shape {latents.shape} != labels shape {labels.shape}.")
  meta = ShardMetadata(
      h=int(labels.shape[1]), w=int(labels.shape[2]), d=int(labels.shape[3]),
      hbq_rounds=int(hbq_rounds), num_examples=int(labels.shape[0]),
      has_latents=latents is not None, source=source,
      skipped=tuple((str(p), str(r)) for p, r in skipped), extra=dict(extra or {}))
  meta.validate(path)
  meta_file = metadata_path(path)
  tmp = f"{path}.tmp-{os.getpid()}"
  writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
  try:
    for i in range(meta.num_examples):
      writer.write(encode_record(labels[i], int(class_labels[i]),
                                 None if latents is None else latents[i], meta.hbq_rounds))
  finally:
    writer.close()
  os.replace(tmp, path)
  _atomic_write_text(meta_file, meta.to_json())  # last: its presence marks the shard complete.
  return meta


def read_metadata(shard_path: str) -> ShardMetadata:
  """The metadata of one shard (ShardFormatError if missing or malformed)."""
  meta_file = metadata_path(shard_path)
  if not os.path.exists(meta_file):
    raise ShardFormatError(
        f"shard {shard_path} has no metadata file {meta_file}: the shard is incomplete (its "
        "writer was probably killed). Rerun `python -m grn_jax.data.tokenize_dataset` with the "
        "same --out to finish it.")
  with open(meta_file) as f:
    return ShardMetadata.from_json(f.read(), meta_file)


def count_records(shard_path: str) -> int:
  """Records in an array_record file (ShardFormatError when the file is unreadable)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  try:
    reader = array_record_module.ArrayRecordReader(shard_path, "readahead_buffer_size:0")
    count = reader.num_records()
    reader.close()  # raises on a damaged file
  except (OSError, RuntimeError, ValueError) as e:
    raise ShardFormatError(f"shard {shard_path} cannot be read ({type(e).__name__}: {e}): the "
                           "file is truncated or corrupt; delete it and its .json and rerun "
                           "tokenize_dataset.") from e
  return count


def is_complete_shard(shard_path: str) -> bool:
  """True when the shard and its metadata exist and the record count matches."""
  if not (os.path.exists(shard_path) and os.path.exists(metadata_path(shard_path))):
    return False
  try:
    return count_records(shard_path) == read_metadata(shard_path).num_examples
  except ShardFormatError:
    return False


def find_shards(pattern: str) -> list[str]:
  """A directory (all its '*.array_record') or a glob pattern -> sorted shard paths."""
  if os.path.isdir(pattern):
    pattern = os.path.join(pattern, "*" + SHARD_SUFFIX)
  paths = sorted(p for p in glob.glob(pattern) if p.endswith(SHARD_SUFFIX))
  if not paths:
    raise FileNotFoundError(f"no label shards ('*{SHARD_SUFFIX}') match {pattern!r}; write them "
                            "with `python -m grn_jax.data.tokenize_dataset --out=DIR`.")
  return paths


def _check_shard_set(paths: Sequence[str]) -> None:
  """Shards named X-i-of-N must all be present when the whole set is read."""
  groups: dict[tuple[str, int], set[int]] = {}
  for p in paths:
    m = _SHARD_RE.search(os.path.basename(p)[:-len(SHARD_SUFFIX)])
    if m:
      key = (os.path.join(os.path.dirname(p),
                          os.path.basename(p)[:m.start()]), int(m.group(2)))
      groups.setdefault(key, set()).add(int(m.group(1)))
  for (prefix, total), found in groups.items():
    missing = sorted(set(range(total)) - found)
    if missing:
      raise ShardFormatError(
          f"{prefix}-*-of-{total:05d}: {len(missing)} of {total} shards are missing (e.g. index "
          f"{missing[:5]}); the data set is incomplete. Finish it with tokenize_dataset, or pass "
          "allow_partial=True to read the shards that exist.")


class LabelShardSource:
  """grain RandomAccessDataSource over label shards.

  Items: dict(labels=int32 [h, w, d] ('ind' labels), class_label=int32 [],
  latent=float32 [h, w, d] when the shards hold latents).
  """

  def __init__(self, pattern: str, allow_partial: bool = False):
    """Args: pattern: a directory of shards or a glob; allow_partial: read an incomplete set."""
    self._pattern = pattern
    self._paths = find_shards(pattern)
    if not allow_partial:
      _check_shard_set(self._paths)
    self._metas = [read_metadata(p) for p in self._paths]
    layout = self._metas[0].layout()
    for path, meta in zip(self._paths, self._metas):
      if meta.layout() != layout:
        diff = {k: (layout[k], v) for k, v in meta.layout().items() if v != layout[k]}
        raise ShardFormatError(
            f"shard {path} does not match {self._paths[0]}: fields {diff} (first shard, this "
            "shard). All shards of a data set must come from the same tokenizer settings.")
    for path, meta in zip(self._paths, self._metas):
      count = count_records(path)
      if count != meta.num_examples:
        raise ShardFormatError(f"shard {path} holds {count} records, its metadata says "
                               f"{meta.num_examples}: the file is truncated or corrupt; "
                               "delete it and its .json and rerun tokenize_dataset.")
    self.metadata = self._metas[0]
    self._offsets = np.cumsum([0] + [m.num_examples for m in self._metas]).tolist()
    if self._offsets[-1] == 0:
      raise ShardFormatError(f"the shards matching {pattern!r} hold no examples.")
    self._readers: list[Any] = [None] * len(self._paths)

  @property
  def shape(self) -> tuple[int, int, int]:
    """(h, w, d) of the labels."""
    return self.metadata.h, self.metadata.w, self.metadata.d

  @property
  def hbq_rounds(self) -> int:
    return self.metadata.hbq_rounds

  @property
  def skipped(self) -> list[tuple[str, str]]:
    """Inputs the writer could not read, over all shards."""
    return [s for m in self._metas for s in m.skipped]

  def __len__(self) -> int:
    return self._offsets[-1]

  def _reader(self, shard: int):
    if self._readers[shard] is None:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      self._readers[shard] = array_record_module.ArrayRecordReader(
          self._paths[shard], "readahead_buffer_size:0")
    return self._readers[shard]

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} examples.")
    shard = bisect.bisect_right(self._offsets, index) - 1
    local = index - self._offsets[shard]
    (data,) = self._reader(shard).read([local])
    return decode_record(data, self._metas[shard], f"{local} of {self._paths[shard]}")

  def __getstate__(self):  # readers hold file handles: reopen lazily after pickling (grain).
    state = dict(self.__dict__)
    state["_readers"] = [None] * len(self._paths)
    return state

  def __repr__(self) -> str:
    m = self.metadata
    return (f"LabelShardSource({self._pattern!r}: {len(self)} examples in {len(self._paths)} "
            f"shards, labels [{m.h}, {m.w}, {m.d}], hbq_rounds={m.hbq_rounds}, "
            f"latents={m.has_latents})")
