"""Captioned images and videos: the caption files, media decoding, and the dynamic-resolution
buckets (official dynamic resolution, GRN-SPEC §G.4, §E.2.10-11).

Caption files (one item per line/row; `media` is relative to the media folder):
  JSONL  {"media": "cats/1.png", "caption": "a cat on a sofa"}        (optional "fps": 24,
         "short_caption": "a cat")
  CSV    a header with the columns media,caption[,fps][,short_caption]
A medium is an image file, a video file imageio reads (mp4, gif, webm, ...), or a folder of
frame images (a video, sorted by name, at the item's fps or data.video_fps).

Buckets: a medium of height / width r is resized to cover, then centre-cropped to, the pixel
size of the aspect template nearest r at the data.pixels bucket (`resolution.image_size`); a
video keeps the longest duration that is a multiple of data.duration_step, at most
data.max_duration (and at least data.min_duration, else it is skipped), resampled to
data.video_fps: 1 + fps * duration frames (1 + 4k, whole latent frames).

Short captions (the official short_cap_prob): training replaces an item's caption by its short
variant with probability config.corruption.short_caption_prob. The variant is the item's
`short_caption` where the caption file gives one (the official image data's short `text`), else
the caption cut after its first k sentences, k uniform in [2, n] for a caption of n > 2
sentences (the official `random_drop_sentences`; drawn once per item at preparation, seeded by
the item's index, where the official draws it every epoch: the umT5 features of both are stored).
"""

import csv
import dataclasses
import json
import math
import os
from typing import NamedTuple

import ml_collections
import numpy as np

from grn_jax import resolution
from grn_jax.data import images

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".avi", ".mkv", ".gif")


class SkipItem(ValueError):
  """An item that the preparation skips (counted and logged): unreadable media, an empty
  caption, a video too short for the duration buckets."""


@dataclasses.dataclass(frozen=True)
class CaptionedItem:
  media: str       # absolute path of the image, video file or frame folder
  caption: str
  fps: float = 0.0  # the video's frame rate; 0 = the file's own (or data.video_fps)
  short_caption: str = ""   # the short variant named by the caption file ("" = none)


class ReadItem(NamedTuple):
  """What a reader's `read(i)` returns."""
  frames: np.ndarray   # uint8 [N, H, W, 3]
  fps: float           # 0 when unknown
  caption: str
  short_caption: str   # "" when the source names none
  ident: str           # names the item in logs


def drop_sentences(caption: str, seed: int, min_sentences: int = 2) -> str:
  """The caption cut after its first k sentences ('.'-separated, as the official
  random_drop_sentences), k uniform in [min_sentences, n] from `seed`; the caption itself when
  it has at most min_sentences sentences."""
  sentences = [s for s in caption.split(".") if s]
  if len(sentences) <= min_sentences:
    return caption
  keep = int(np.random.default_rng(seed).integers(min_sentences, len(sentences) + 1))
  return ".".join(sentences[:keep]) + "."


def short_variant(caption: str, given: str, seed: int) -> str:
  """An item's short caption (module docstring): `given` when not empty, else the caption
  cut after a seeded number of sentences; "" when that leaves the caption whole."""
  short = given.strip() or drop_sentences(caption, seed)
  return "" if short == caption else short


def read_captions(path: str, media_dir: str) -> list[CaptionedItem]:
  """The items of a .jsonl or .csv caption file (see the module docstring)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"caption file {path!r} does not exist.")
  rows = []
  if path.endswith(".jsonl"):
    with open(path, encoding="utf-8") as f:
      for number, line in enumerate(f, start=1):
        if line.strip():
          try:
            rows.append((number, json.loads(line)))
          except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number} is not a JSON object: {e}.") from e
  elif path.endswith(".csv"):
    with open(path, encoding="utf-8", newline="") as f:
      rows = list(enumerate(csv.DictReader(f), start=2))
  else:
    raise ValueError(f"caption file {path!r} must end in .jsonl or .csv.")
  items = []
  for number, row in rows:
    if not isinstance(row, dict) or "media" not in row or "caption" not in row:
      raise ValueError(f"{path}:{number} needs the fields 'media' and 'caption', got {row!r}.")
    fps = row.get("fps") or 0.0  # optional per-row fields of the caption file
    items.append(CaptionedItem(os.path.join(media_dir, str(row["media"])),
                               str(row["caption"] or ""), float(fps),
                               str(row.get("short_caption") or "")))
  if not items:
    raise ValueError(f"caption file {path!r} holds no items.")
  return items


def load_media(item: CaptionedItem) -> tuple[np.ndarray, float]:
  """(frames uint8 [N, H, W, 3], fps or 0 when unknown) of an item; SkipItem when unreadable."""
  path = item.media
  try:
    if os.path.isdir(path):
      names = sorted(n for n in os.listdir(path) if n.lower().endswith(images.IMAGE_EXTENSIONS))
      if not names:
        raise SkipItem(f"frame folder {path} holds no images.")
      frames = [images.load_image(os.path.join(path, n)) for n in names]
      if len({f.shape for f in frames}) != 1:
        raise SkipItem(f"the frames of {path} differ in size.")
      return np.stack(frames), item.fps
    if not os.path.exists(path):
      raise SkipItem(f"media file {path} does not exist.")
    if path.lower().endswith(VIDEO_EXTENSIONS):
      import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
      frames = np.asarray(iio.imread(path, index=None))
      if frames.ndim == 3:
        frames = frames[None]
      frames = np.stack([images.to_uint8_rgb(f, path) for f in frames])
      fps = item.fps or float(iio.immeta(path).get("fps", 0.0) or 0.0)
      if not fps and path.lower().endswith(".gif"):
        duration_ms = float(iio.immeta(path).get("duration", 0) or 0)
        fps = 1000.0 / duration_ms if duration_ms else 0.0
      return frames, fps
    return images.load_image(path)[None], 0.0
  except images.ImageDecodeError as e:
    raise SkipItem(str(e)) from e
  except (OSError, ValueError, RuntimeError) as e:
    if isinstance(e, SkipItem):
      raise
    raise SkipItem(f"cannot decode {path}: {type(e).__name__}: {e}") from e


def bucket_video_frames(num_frames: int, fps: float, data: ml_collections.ConfigDict
                        ) -> np.ndarray:
  """Source frame indices int [1 + video_fps * duration] of the duration bucket (see the
  module docstring); SkipItem when the clip is shorter than data.min_duration."""
  fps = fps or data.video_fps
  available = (num_frames - 1) / fps
  steps = math.floor(available / data.duration_step + 1e-6)
  duration = min(steps * data.duration_step, data.max_duration)
  if duration <= 0 or duration < data.min_duration:
    raise SkipItem(f"a clip of {num_frames} frames at {fps} fps ({available:.2f} s) is shorter "
                   f"than one duration step ({data.duration_step} s) or data.min_duration="
                   f"{data.min_duration}.")
  count = resolution.num_frames(duration, data.video_fps)
  index = np.round(np.arange(count) * fps / data.video_fps).astype(np.int64)
  return np.minimum(index, num_frames - 1)


def bucket_media(frames: np.ndarray, fps: float, data: ml_collections.ConfigDict
                 ) -> tuple[np.ndarray, float]:
  """(uint8 [T, height, width, 3] at the item's bucket, h_div_w of the source media).

  A single frame is an image; several are a video, which a T2I data set (data.max_duration 0)
  skips.
  """
  h_div_w = frames.shape[1] / frames.shape[2]
  height, width = resolution.image_size(h_div_w, data.pixels)
  if len(frames) > 1:
    if data.max_duration <= 0:
      raise SkipItem("a video in an image data set (data.max_duration = 0).")
    frames = frames[bucket_video_frames(len(frames), fps, data)]
  return np.stack([images.resize_center_crop(f, height, width) for f in frames]), h_div_w


class CaptionFileReader:
  """The items of a caption file: `read(i)` -> ReadItem; SkipItem when unreadable; `ident(i)`
  names item i in logs."""

  def __init__(self, captions: str, media_dir: str):
    self.items = read_captions(captions, media_dir)
    self.description = f"captions:{os.path.abspath(captions)}"

  def __len__(self) -> int:
    return len(self.items)

  def ident(self, index: int) -> str:
    return self.items[index].media

  def read(self, index: int) -> ReadItem:
    item = self.items[index]
    return ReadItem(*load_media(item), item.caption, item.short_caption, item.media)


class TfdsCaptionReader:
  """A catalogued tfds data set with a media feature (an image [H, W, 3] or a video
  [N, H, W, 3]) and a caption feature (a string, or a sequence of them: the first is used, e.g.
  coco_captions' captions/text), and optionally a short-caption feature."""

  def __init__(self, data_source, name: str, split: str, media_key: str, caption_key: str,
               short_caption_key: str = ""):
    self.source, self.media_key, self.caption_key = data_source, media_key, caption_key
    self.short_caption_key = short_caption_key
    self.description = f"tfds:{name}/{split}"

  def __len__(self) -> int:
    return len(self.source)

  def _field(self, element, key: str):
    for part in key.split("/"):
      if part not in element:
        raise KeyError(f"{self.description} elements have no feature {key!r} (features: "
                       f"{sorted(element)}); set --media_key / --caption_key / "
                       "--short_caption_key.")
      element = element[part]
    return element

  def ident(self, index: int) -> str:
    return f"{self.description}[{index}]"

  def _text(self, element, key: str) -> str:
    text = self._field(element, key)
    if not isinstance(text, (str, bytes)) and len(np.shape(text)) > 0:
      text = text[0] if len(text) else ""
    return text.decode("utf-8") if isinstance(text, bytes) else str(text)

  def read(self, index: int) -> ReadItem:
    ident = self.ident(index)
    element = self.source[index]
    media = np.asarray(self._field(element, self.media_key))
    caption = self._text(element, self.caption_key)
    short = self._text(element, self.short_caption_key) if self.short_caption_key else ""
    try:
      frames = media[None] if media.ndim == 3 else media
      return ReadItem(np.stack([images.to_uint8_rgb(f, ident) for f in frames]), 0.0, caption,
                      short, ident)
    except images.ImageDecodeError as e:
      raise SkipItem(str(e)) from e
