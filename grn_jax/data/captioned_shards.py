"""Prepared captioned examples on disk (written by `python -m grn_jax.data.tokenize_captioned`).

Layout of a data set directory:

  captioned-00000-of-00008.array_record    one record per example (variable shapes)
  captioned-00000-of-00008.json            shard metadata, written last (marks the shard done):
                                           text_dim, label_dim, num_examples, every example's
                                           visual slots and text tokens (for the packing plan,
                                           without reading the records), skipped inputs
  null_prompt.npy                          float32 [l0, text_dim]: the empty prompt's features
                                           (caption dropout)

Record (little-endian):
  b"GRNC" | float32 h_div_w | uint16 T, h, w, D | uint32 text tokens l, caption bytes c
  | labels: np.packbits of the bits [T, h, w, D] | bfloat16 features [l, text_dim] | caption utf-8
An example with a short caption (grn_jax/data/captioned_media.py) has the magic b"GRNS", one more
uint32 after c, its short caption's tokens s, and bfloat16 short features [s, text_dim] after
the features; the metadata then lists every example's s (0: none) as short_text_lengths.

umT5 runs in bfloat16, so bfloat16 features are its output exactly; the bit labels take D / 8
bytes per token.
"""

import bisect
import dataclasses
import json
import os
import struct
from typing import Any, Sequence

import ml_dtypes
import numpy as np

from grn_jax.data import label_shards
from grn_jax.data import packing

MAGIC = b"GRNC"
MAGIC_SHORT = b"GRNS"   # the record holds a short caption's features too
PREFIX = "captioned"
NULL_PROMPT_FILE = "null_prompt.npy"
_HEADER = struct.Struct("<4sfHHHHII")
_SHORT = struct.Struct("<I")
ShardFormatError = label_shards.ShardFormatError


def encode_record(labels: np.ndarray, features: np.ndarray, h_div_w: float, caption: str = "",
                  short_features: np.ndarray | None = None) -> bytes:
  """One example -> record bytes (see the module docstring)."""
  labels, features = np.asarray(labels), np.asarray(features)
  if labels.ndim != 4 or (labels.size and labels.max() > 1):
    raise ValueError(f"labels must be bits [T, h, w, D], got {labels.dtype} {labels.shape}.")
  for name, f in (("features", features), ("short_features", short_features)):
    if f is not None and (np.ndim(f) != 2 or np.shape(f)[-1] != features.shape[-1]):
      raise ValueError(f"{name} must be [length, text_dim] (the features' text_dim), got "
                       f"{np.shape(f)}.")
    if f is not None and not len(f):
      raise ValueError(f"{name} must hold at least one token (EOS).")
  text = caption.encode("utf-8")
  magic = MAGIC if short_features is None else MAGIC_SHORT
  parts = [_HEADER.pack(magic, float(h_div_w), *labels.shape, len(features), len(text))]
  if short_features is not None:
    parts.append(_SHORT.pack(len(short_features)))
  parts += [np.packbits(labels.astype(np.uint8).reshape(-1)).tobytes(),
            features.astype(ml_dtypes.bfloat16).tobytes()]
  if short_features is not None:
    parts.append(np.asarray(short_features).astype(ml_dtypes.bfloat16).tobytes())
  return b"".join(parts + [text])


def decode_record(data: bytes, text_dim: int, where: str = "") -> dict[str, Any]:
  """Record bytes -> {'labels' uint8 [T, h, w, D], 'features' float32 [l, text_dim], 'h_div_w',
  'caption'} and 'short_features' float32 [s, text_dim] when the example has a short caption
  (ShardFormatError naming `where` when corrupt)."""
  if len(data) < _HEADER.size:
    raise ShardFormatError(f"corrupt record {where}: {len(data)} bytes.")
  magic, h_div_w, t, h, w, d, length, text = _HEADER.unpack_from(data)
  at, short = _HEADER.size, 0
  if magic == MAGIC_SHORT and len(data) >= at + _SHORT.size:
    (short,), at = _SHORT.unpack_from(data, at), at + _SHORT.size
  num_bits = t * h * w * d
  label_bytes = (num_bits + 7) // 8
  expected = at + label_bytes + 2 * (length + short) * text_dim + text
  if magic not in (MAGIC, MAGIC_SHORT) or len(data) != expected:
    raise ShardFormatError(f"corrupt record {where}: magic {magic!r}, {len(data)} bytes, its "
                           f"header implies {expected} with text_dim {text_dim}.")
  bits = np.unpackbits(np.frombuffer(data, np.uint8, label_bytes, at))[:num_bits]
  at += label_bytes
  out = dict(labels=bits.reshape(t, h, w, d), h_div_w=float(h_div_w))
  for key, n in (("features", length), ("short_features", short)):
    if key == "features" or magic == MAGIC_SHORT:
      out[key] = np.frombuffer(data, ml_dtypes.bfloat16, n * text_dim, at).astype(
          np.float32).reshape(n, text_dim)
      at += 2 * n * text_dim
  out["caption"] = data[at:].decode("utf-8")
  return out


@dataclasses.dataclass(frozen=True)
class CaptionedShardMetadata:
  text_dim: int
  label_dim: int
  num_examples: int
  visual_lengths: tuple[int, ...]
  text_lengths: tuple[int, ...]
  source: str = ""
  skipped: tuple[tuple[str, str], ...] = ()   # (input, reason), informational
  short_text_lengths: tuple[int, ...] = ()    # per example, 0 = no short caption; () = none

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, text: str, where: str) -> "CaptionedShardMetadata":
    try:
      raw = json.loads(text)
      meta = cls(**{**raw, "visual_lengths": tuple(raw["visual_lengths"]),
                    "text_lengths": tuple(raw["text_lengths"]),
                    "short_text_lengths": tuple(raw.get("short_text_lengths", ())),
                    "skipped": tuple(tuple(s) for s in raw.get("skipped", ()))})
    except (ValueError, TypeError, KeyError) as e:
      raise ShardFormatError(f"malformed shard metadata {where}: {e}; delete the shard and its "
                             ".json and rerun tokenize_captioned.") from e
    if not (len(meta.visual_lengths) == len(meta.text_lengths) == meta.num_examples and
            len(meta.short_text_lengths) in (0, meta.num_examples)):
      raise ShardFormatError(f"shard metadata {where}: {meta.num_examples} examples but "
                             f"{len(meta.visual_lengths)} / {len(meta.text_lengths)} / "
                             f"{len(meta.short_text_lengths)} (short) lengths.")
    return meta

  def caption_slots(self) -> np.ndarray:
    """Text tokens an example may take in a row: its caption's or its short caption's."""
    text = np.asarray(self.text_lengths, np.int64)
    return np.maximum(text, self.short_text_lengths) if self.short_text_lengths else text


def _atomic_write(path: str, write) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  write(tmp)
  os.replace(tmp, path)


def write_null_prompt(out: str, features: np.ndarray) -> None:
  """The empty prompt's features float [l0, text_dim] (caption dropout)."""
  _atomic_write(os.path.join(out, NULL_PROMPT_FILE),
                lambda tmp: np.save(open(tmp, "wb"), np.asarray(features, np.float32)))


def write_shard(path: str, examples: Sequence[dict[str, Any]], *, text_dim: int, label_dim: int,
                source: str = "", skipped: Sequence[tuple[str, str]] = ()
                ) -> CaptionedShardMetadata:
  """Writes one complete shard, then its metadata (atomically)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  for example in examples:
    if example["features"].shape[-1] != text_dim or example["labels"].shape[-1] != label_dim:
      raise ValueError(f"an example of {path} has features {example['features'].shape} / labels "
                       f"{example['labels'].shape}, not text_dim {text_dim} / D {label_dim}.")
  short = [e.get("short_features") for e in examples]
  meta = CaptionedShardMetadata(
      text_dim=int(text_dim), label_dim=int(label_dim), num_examples=len(examples),
      visual_lengths=tuple(packing.visual_length(e["labels"].shape) for e in examples),
      text_lengths=tuple(len(e["features"]) for e in examples), source=source,
      skipped=tuple((str(a), str(b)) for a, b in skipped),
      short_text_lengths=(tuple(0 if f is None else len(f) for f in short)
                          if any(f is not None for f in short) else ()))

  def write(tmp):
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
      for e, f in zip(examples, short):
        writer.write(encode_record(e["labels"], e["features"], e["h_div_w"], e.get("caption", ""),
                                   f))
    finally:
      writer.close()

  _atomic_write(path, write)
  _atomic_write(label_shards.metadata_path(path),
                lambda tmp: open(tmp, "w").write(meta.to_json()))
  return meta


def read_metadata(shard_path: str) -> CaptionedShardMetadata:
  meta_file = label_shards.metadata_path(shard_path)
  if not os.path.exists(meta_file):
    raise ShardFormatError(f"shard {shard_path} has no metadata {meta_file}: it is incomplete; "
                           "rerun tokenize_captioned with the same --out to finish it.")
  with open(meta_file) as f:
    return CaptionedShardMetadata.from_json(f.read(), meta_file)


def is_complete_shard(shard_path: str) -> bool:
  """The shard and its metadata exist and agree on the record count."""
  if not (os.path.exists(shard_path) and
          os.path.exists(label_shards.metadata_path(shard_path))):
    return False
  try:
    return label_shards.count_records(shard_path) == read_metadata(shard_path).num_examples
  except ShardFormatError:
    return False


class CaptionedShardSource:
  """Random access over the shards of a prepared directory (grn_jax/data/captioned.py source)."""

  def __init__(self, data_dir: str):
    self._paths = label_shards.find_shards(os.path.join(data_dir, f"{PREFIX}-*"
                                                        f"{label_shards.SHARD_SUFFIX}"))
    self._metas = [read_metadata(p) for p in self._paths]
    dims = {(m.text_dim, m.label_dim) for m in self._metas if m.num_examples}
    if len(dims) != 1:
      raise ShardFormatError(f"the shards of {data_dir} disagree on (text_dim, D): {dims}.")
    (self.text_dim, self.label_dim), = dims
    for path, meta in zip(self._paths, self._metas):
      if label_shards.count_records(path) != meta.num_examples:
        raise ShardFormatError(f"shard {path} does not hold the {meta.num_examples} records "
                               "its metadata names; delete both and rerun tokenize_captioned.")
    null_file = os.path.join(data_dir, NULL_PROMPT_FILE)
    if not os.path.exists(null_file):
      raise ShardFormatError(f"{null_file} is missing: rerun tokenize_captioned --out={data_dir}.")
    self.null_features = np.load(null_file).astype(np.float32)
    if self.null_features.ndim != 2 or self.null_features.shape[-1] != self.text_dim:
      raise ShardFormatError(f"{null_file} holds {self.null_features.shape}, not [l0, "
                             f"{self.text_dim}].")
    self._offsets = np.cumsum([0] + [m.num_examples for m in self._metas]).tolist()
    if self._offsets[-1] == 0:
      raise ShardFormatError(f"the shards of {data_dir} hold no examples.")
    self._readers: list[Any] = [None] * len(self._paths)

  def __len__(self) -> int:
    return self._offsets[-1]

  @property
  def skipped(self) -> list[tuple[str, str]]:
    return [s for m in self._metas for s in m.skipped]

  def lengths(self) -> tuple[np.ndarray, np.ndarray]:
    """(visual slots int [N], text tokens int [N]: the longer of the caption and the short
    caption), from the metadata."""
    return (np.concatenate([m.visual_lengths for m in self._metas]).astype(np.int64),
            np.concatenate([m.caption_slots() for m in self._metas]).astype(np.int64))

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} examples.")
    shard = bisect.bisect_right(self._offsets, index) - 1
    if self._readers[shard] is None:
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      self._readers[shard] = array_record_module.ArrayRecordReader(
          self._paths[shard], "readahead_buffer_size:0")
    local = index - self._offsets[shard]
    (data,) = self._readers[shard].read([local])
    return decode_record(data, self.text_dim, f"{local} of {self._paths[shard]}")

  def __getstate__(self):  # readers hold file handles: reopen lazily after pickling (grain).
    state = dict(self.__dict__)
    state["_readers"] = [None] * len(self._paths)
    return state
