"""How generated outputs are written: PNGs with metadata (C2I), images or videos with a JSON
record each (T2I/T2V). Every file is written atomically (a temporary file, then a rename), so a
killed run never leaves a truncated output that a resumed run would take for done.

  PngWriter()                       <out>/{i:06d}.png, metadata as PNG text chunks
  VisualWriter(video, fps, record)  <out>/{i:06d}.png (images) or .mp4 + .gif (videos), then
                                    <out>/{i:06d}.json (the record: prompt, seed, settings,
                                    steps used): written last, it marks the output done

MP4 needs the `video` extra (imageio with its ffmpeg plugin: pip install 'grn_jax[video]').
"""

import json
import os
from typing import Any, Mapping, Protocol

import numpy as np
from PIL import Image
from PIL import PngImagePlugin


class OutputWriter(Protocol):
  """What sampling/generate.py needs to write and resume outputs."""

  def done(self, out_dir: str, index: int) -> bool:
    """Whether output `index` is completely written."""

  def write(self, out_dir: str, index: int, pixels: np.ndarray, meta: Mapping[str, Any]) -> None:
    """Writes output `index`: uint8 [H, W, 3] or [frames, H, W, 3] and its metadata."""


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
                  **{k.removeprefix("grn_"): _plain(v) for k, v in meta.items()})
    save_json(self.json_path(out_dir, index), record)


def _plain(value: Any) -> Any:
  """numpy scalars -> Python numbers (JSON)."""
  return value.item() if isinstance(value, np.generic) else value
