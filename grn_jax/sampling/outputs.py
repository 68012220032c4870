"""How generated outputs are written: PNGs with metadata (C2I), images or videos with a JSON
record each (T2I/T2V). Every file is written atomically (a temporary file, then a rename), so a
killed run never leaves a truncated output that a resumed run would take for done.

  PngWriter()                       <out>/{i:06d}.png, metadata as PNG text chunks
  VisualWriter(video, fps, record)  <out>/{i:06d}.png (images) or .mp4 + .gif (videos), then
                                    <out>/{i:06d}.json (the record: prompt, seed, settings,
                                    steps used): written last, it marks the output done

Each writer also reads an output back (`read`: its pixels and metadata, raising OutputDamaged
when a file is missing, truncated or not what its record says), which is how a resumed run
validates what it finds (sampling/generate.py) and how sampling/fit_entropy.py reads the runs
it compares; `remove` deletes an output's files so it is generated again.

MP4 needs the `video` extra (imageio with its ffmpeg plugin: pip install 'grn_jax[video]').
"""

import json
import os
from typing import Any, Mapping, Protocol

import numpy as np
from PIL import Image
from PIL import PngImagePlugin


class OutputDamaged(ValueError):
  """An output's files exist but are unreadable or disagree with each other."""


class OutputWriter(Protocol):
  """What sampling/generate.py needs to write, validate and resume outputs."""

  def done(self, out_dir: str, index: int) -> bool:
    """Whether output `index` is completely written (its last file exists)."""

  def write(self, out_dir: str, index: int, pixels: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Writes output `index`: uint8 [H, W, 3] or [frames, H, W, 3] and its metadata."""

  def read(self, out_dir: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(pixels as written, metadata as given to write); raises OutputDamaged."""

  def remove(self, out_dir: str, index: int) -> None:
    """Deletes every file of output `index` (absent ones are fine)."""


def png_path(out_dir: str, index: int) -> str:
  return os.path.join(out_dir, f"{index:06d}.png")


def save_png(path: str, image: np.ndarray, meta: Mapping[str, Any] | None = None) -> None:
  """Writes uint8 [H, W, C] with text chunks `meta`, atomically."""
  info = PngImagePlugin.PngInfo()
  for k, v in (meta or {}).items():
    info.add_text(k, repr(v))
  tmp = path + ".tmp"
  Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
  os.replace(tmp, path)


def save_gif(path: str, frames: np.ndarray, fps: float) -> None:
  """uint8 [F, H, W, 3] -> an endlessly looping GIF, atomically."""
  images = [Image.fromarray(f) for f in frames]
  tmp = path + ".tmp"
  images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                 duration=round(1000 / fps), loop=0)
  os.replace(tmp, path)


def save_mp4(path: str, frames: np.ndarray, fps: float) -> None:
  """uint8 [F, H, W, 3] -> an H.264 MP4 (yuv420p, plays everywhere), atomically."""
  try:
    import imageio.v3 as iio  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("writing MP4 videos needs imageio and imageio-ffmpeg: pip install "
                      "'grn_jax[video]'.") from e
  tmp = path[:-len(".mp4")] + ".tmp.mp4"  # the extension tells imageio the format
  iio.imwrite(tmp, np.asarray(frames), extension=".mp4", fps=fps, codec="libx264",
              pixelformat="yuv420p", macro_block_size=1)
  os.replace(tmp, path)


def save_json(path: str, record: Mapping[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1, ensure_ascii=False)
  os.replace(tmp, path)


class PngWriter:
  """One PNG per output with its metadata as text chunks (the C2I outputs)."""

  def done(self, out_dir: str, index: int) -> bool:
    return os.path.exists(png_path(out_dir, index))

  def write(self, out_dir: str, index: int, pixels: np.ndarray, meta: Mapping[str, Any]) -> None:
    save_png(png_path(out_dir, index), pixels, meta)

  def read(self, out_dir: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(uint8 [H, W, 3], the grn_* text chunks as floats)."""
    return read_png(png_path(out_dir, index))

  def remove(self, out_dir: str, index: int) -> None:
    remove_files([png_path(out_dir, index)])


def read_png(path: str) -> tuple[np.ndarray, dict[str, float]]:
  """(uint8 [H, W, 3], metadata dict of the grn_* text chunks); raises OutputDamaged."""
  try:
    with Image.open(path) as im:
      meta = {k: float(v) for k, v in getattr(im, "text", {}).items() if k.startswith("grn_")}
      return np.asarray(im.convert("RGB")), meta
  except (OSError, ValueError, SyntaxError) as e:  # PIL: truncated / not a PNG
    raise OutputDamaged(f"{path} is unreadable ({e})") from e


def read_gif(path: str) -> np.ndarray:
  """uint8 [F, H, W, 3] of a GIF (its palette colours); raises OutputDamaged."""
  try:
    with Image.open(path) as im:
      frames = []
      for i in range(im.n_frames):
        im.seek(i)
        frames.append(np.asarray(im.convert("RGB")))
      return np.stack(frames)
  except (OSError, ValueError, EOFError) as e:
    raise OutputDamaged(f"{path} is unreadable ({e})") from e


def remove_files(paths) -> None:
  """Deletes those of `paths` that exist."""
  for path in paths:
    if os.path.exists(path):
      os.remove(path)


# sampling/generate.py's record of a run (what its outputs depend on): the family's record()
# plus RUN_KEYS (the seed and the fingerprints of the params and the decoder's params).
RECORD_FILE = "generation.json"
RUN_KEYS = ("seed", "params", "decode_params")

# Sampler metadata as generate passes it to write (PNG text chunks) -> JSON record keys.
_RECORD_KEYS = {"grn_steps": "steps", "grn_nfe": "nfe", "grn_entropy": "entropy"}


class VisualWriter:
  """An image (PNG) or a video (MP4 and GIF) per output, and its JSON record (written last)."""

  def __init__(self, video: bool, fps: float, record: Mapping[str, Any]):
    self.video, self.fps, self.record = video, fps, dict(record)

  @staticmethod
  def json_path(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, f"{index:06d}.json")

  def done(self, out_dir: str, index: int) -> bool:
    return os.path.exists(self.json_path(out_dir, index))

  def write(self, out_dir: str, index: int, pixels: np.ndarray, meta: Mapping[str, Any]) -> None:
    """pixels uint8 [F, H, W, 3] (F = 1 for images)."""
    stem = os.path.join(out_dir, f"{index:06d}")
    if self.video:
      files = [stem + ".mp4", stem + ".gif"]
      save_mp4(files[0], pixels, self.fps)
      save_gif(files[1], pixels, self.fps)
    else:
      files = [stem + ".png"]
      save_png(files[0], pixels[0])
    record = dict(self.record, index=index, files=[os.path.basename(f) for f in files],
                  **{k.removeprefix("grn_"): plain(v) for k, v in meta.items()})
    save_json(self.json_path(out_dir, index), record)

  def read(self, out_dir: str, index: int) -> tuple[np.ndarray, dict[str, Any]]:
    """(uint8 [F, H, W, 3]: the PNG, or the GIF's frames for videos, metadata as written).

    Checks that the record parses, is that of `index` and of this writer's settings, and that
    its media decode (a video's MP4 must exist and be non-empty; its GIF gives the frames)."""
    path = self.json_path(out_dir, index)
    try:
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
    except (OSError, ValueError) as e:
      raise OutputDamaged(f"{path} is unreadable ({e})") from e
    if not isinstance(record, dict) or record.get("index") != index:
      raise OutputDamaged(f"{path} is not the record of output {index}")
    stored = json.loads(json.dumps(self.record))  # tuples -> lists, as stored
    wrong = sorted(k for k, v in stored.items() if record.get(k) != v)
    if wrong:
      raise OutputDamaged(f"{path} was written with other settings ({wrong})")
    stem = os.path.join(out_dir, f"{index:06d}")
    if self.video:
      if not os.path.exists(stem + ".mp4") or os.path.getsize(stem + ".mp4") == 0:
        raise OutputDamaged(f"{stem}.mp4 is missing or empty")
      pixels = read_gif(stem + ".gif")
    else:
      pixels = read_png(stem + ".png")[0][None]
    meta = {k: record[v] for k, v in _RECORD_KEYS.items() if v in record}
    meta.update({k: v for k, v in record.items() if k not in stored and k not in (
        "index", "files", *_RECORD_KEYS.values())})
    return pixels, meta

  def remove(self, out_dir: str, index: int) -> None:
    stem = os.path.join(out_dir, f"{index:06d}")
    remove_files([self.json_path(out_dir, index)] +   # first: the output stops counting as done
            [stem + s for s in (".png", ".mp4", ".gif")])


def plain(value: Any) -> Any:
  """numpy scalars -> Python numbers (JSON)."""
  return value.item() if isinstance(value, np.generic) else value
