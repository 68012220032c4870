"""Reading images safely: folder listing, Pillow decode with clear errors, the ADM center crop.

All images are returned as RGB uint8 [H, W, 3] numpy arrays.
"""

import io
from typing import Any

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
# The crop upscales an image at most this much (short side >= image_size / MAX_UPSCALE); a
# smaller image (a 1 x 1 thumbnail, an icon) is refused as unusable rather than blown up.
MAX_UPSCALE = 4
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


class ImageDecodeError(ValueError):
  """An image file is unreadable: missing, corrupt, truncated or not an image."""


def center_crop_adm(image: np.ndarray | Image.Image, image_size: int) -> np.ndarray:
  """The ADM center crop (guided-diffusion's `center_crop_arr`, used by the official GRN data
  loader): halve with BOX filtering while the short side is >= 2 * image_size, BICUBIC-resize so
  the short side is image_size, then crop the centre.

  Args:
    image: RGB uint8 [H, W, 3] (or a PIL image).
    image_size: output side in pixels.

  Returns:
    uint8 [image_size, image_size, 3].
  """
  if image_size < 1:
    raise ValueError(f"image_size must be positive, got {image_size}.")
  pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
  if pil.mode != "RGB":
    pil = pil.convert("RGB")
  if min(pil.size) < 1:
    raise ValueError(f"cannot crop an empty image of size {pil.size}.")
  if min(pil.size) * MAX_UPSCALE < image_size:
    raise ImageDecodeError(f"image of size {pil.size[0]} x {pil.size[1]} is too small for "
                           f"{image_size} x {image_size} (more than {MAX_UPSCALE}x upscaling).")
  while min(pil.size) >= 2 * image_size:
    pil = pil.resize(tuple(s // 2 for s in pil.size), resample=Image.BOX)
  scale = image_size / min(pil.size)
  pil = pil.resize(tuple(round(s * scale) for s in pil.size), resample=Image.BICUBIC)
  arr = np.asarray(pil)
  top = (arr.shape[0] - image_size) // 2
  left = (arr.shape[1] - image_size) // 2
  return np.ascontiguousarray(arr[top:top + image_size, left:left + image_size])


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
  """Encoded image bytes -> RGB uint8 [H, W, 3]; ImageDecodeError (naming `name`) if unreadable.

  The whole image is decoded here (Pillow decodes lazily), so truncated files fail now, not
  later; Pillow's LOAD_TRUNCATED_IMAGES is left off so they are never silently padded.
  """
  try:
    with Image.open(io.BytesIO(data)) as img:
      img.load()
      if img.mode in _SIXTEEN_BIT_MODES:  # 16-bit greyscale: scale, do not clip to 255
        grey = np.asarray(img).astype(np.float64)
        if img.mode != "I" or grey.max() > 255:
          grey = grey / 257.0
        arr = np.repeat(np.clip(np.round(grey), 0, 255).astype(np.uint8)[..., None], 3, -1)
      else:
        arr = np.asarray(img.convert("RGB"), np.uint8)
  except UnidentifiedImageError as e:
    raise ImageDecodeError(f"cannot decode image {name}: not a format Pillow recognises "
                           "(corrupt or not an image).") from e
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    raise ImageDecodeError(f"cannot decode image {name}: {type(e).__name__}: {e}") from e
  if arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape[:2]) < 1:
    raise ImageDecodeError(f"image {name} decoded to an unusable shape {arr.shape}.")
  return arr


def load_image(path: str) -> np.ndarray:
  """Reads and decodes an image file (local or gs:// via etils) -> RGB uint8 [H, W, 3]."""
  try:
    from etils import epath  # pylint: disable=g-import-not-at-top
    data = epath.Path(path).read_bytes()
  except OSError as e:
    raise ImageDecodeError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
  return decode_image(data, path)


def list_image_folder(root: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
                      ) -> tuple[list[tuple[str, int]], list[str]]:
  """`root/<class name>/<image>` -> ([(path, class index)], class names).

  Class indices follow the sorted sub-folder names (torchvision ImageFolder order, as the
  official training script); files are sorted within a class. Extensions match case-insensitively.
  """
  from etils import epath  # pylint: disable=g-import-not-at-top
  root_path = epath.Path(root)
  if not root_path.is_dir():
    raise FileNotFoundError(f"{root!r} is not a folder of class sub-folders.")
  classes = sorted(p.name for p in root_path.iterdir() if p.is_dir())
  if not classes:
    raise FileNotFoundError(f"{root!r} has no class sub-folders (expected ROOT/CLASS/IMAGE).")
  extensions = tuple(e.lower() for e in extensions)
  files: list[tuple[str, int]] = []
  for index, name in enumerate(classes):
    found = sorted(str(f) for f in (root_path / name).iterdir()
                   if f.is_file() and f.name.lower().endswith(extensions))
    files.extend((f, index) for f in found)
  if not files:
    raise FileNotFoundError(f"no images ({', '.join(extensions)}) under the class sub-folders "
                            f"of {root!r}.")
  return files, classes


def to_uint8_rgb(image: Any, name: str = "<array>") -> np.ndarray:
  """A decoded image array (e.g. from tfds) -> RGB uint8 [H, W, 3]; ImageDecodeError otherwise."""
  arr = np.asarray(image)
  if arr.ndim == 2:
    arr = np.repeat(arr[..., None], 3, axis=-1)
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = np.repeat(arr, 3, axis=-1)
  if arr.ndim == 3 and arr.shape[-1] == 4:
    arr = arr[..., :3]
  if arr.ndim != 3 or arr.shape[-1] != 3 or min(arr.shape[:2]) < 1 or arr.dtype != np.uint8:
    raise ImageDecodeError(f"image {name} is not an RGB uint8 image: {arr.dtype} {arr.shape}.")
  return arr


def resize_center_crop(image: np.ndarray | Image.Image, height: int, width: int) -> np.ndarray:
  """Scale to cover height x width (BOX halving while twice as large, then BICUBIC, as
  `center_crop_adm`), then crop the centre: the bucket resize of the T2I/T2V data.

  Args:
    image: RGB uint8 [H, W, 3] (or a PIL image).
    height, width: output size in pixels.

  Returns:
    uint8 [height, width, 3].
  """
  if height < 1 or width < 1:
    raise ValueError(f"the output size must be positive, got {height} x {width}.")
  pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
  if pil.mode != "RGB":
    pil = pil.convert("RGB")
  while pil.size[0] >= 2 * width and pil.size[1] >= 2 * height:
    pil = pil.resize(tuple(s // 2 for s in pil.size), resample=Image.BOX)
  scale = max(width / pil.size[0], height / pil.size[1])
  size = (max(width, round(pil.size[0] * scale)), max(height, round(pil.size[1] * scale)))
  arr = np.asarray(pil.resize(size, resample=Image.BICUBIC))
  top, left = (arr.shape[0] - height) // 2, (arr.shape[1] - width) // 2
  return np.ascontiguousarray(arr[top:top + height, left:left + width])
