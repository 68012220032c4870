"""The demo data set: scikit-learn's handwritten digits, upsampled for a stride-16 tokenizer.

1,797 greyscale 8x8 images (values 0..16, 10 classes, about 180 per class) ship inside the
scikit-learn wheel (`sklearn.datasets.load_digits`), so the demo needs no download.
"""

import jax
import jax.numpy as jnp
import numpy as np

NUM_CLASSES = 10
SOURCE_SIZE = 8


def load_digits_gray(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """All digits, upsampled with a bicubic resize.

  Args:
    image_size: output side in pixels (a multiple of 8, e.g. 32 for a 2x2 latent grid).

  Returns:
    (images float32 [1797, image_size, image_size] in [0, 1] (0 = background),
     class labels int32 [1797] in 0..9).
  """
  if image_size < SOURCE_SIZE or image_size % SOURCE_SIZE:
    raise ValueError(f"image_size must be a positive multiple of {SOURCE_SIZE}, got "
                     f"{image_size}.")
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = digits.images.astype(np.float32) / 16.0
  return resize_gray(images, image_size), digits.target.astype(np.int32)


def resize_gray(images: np.ndarray, image_size: int) -> np.ndarray:
  """float [N, s, s] in [0, 1] -> float32 [N, image_size, image_size] (bicubic, clipped)."""
  images = np.asarray(images, np.float32)
  if images.ndim != 3:
    raise ValueError(f"expected greyscale images [N, s, s], got shape {images.shape}.")
  if images.shape[1:] == (image_size, image_size):
    return images
  out = jax.image.resize(jnp.asarray(images), (images.shape[0], image_size, image_size),
                         method="cubic", antialias=True)
  return np.clip(np.asarray(out), 0.0, 1.0)


def gray_to_model(images: np.ndarray) -> np.ndarray:
  """float [N, H, W] in [0, 1] -> float32 [N, H, W, 3] in [-1, 1] (the tokenizer's input;
  grn_jax.tokenizer_io.to_uint8 maps it, and the tokenizer's output, to uint8)."""
  x = np.asarray(images, np.float32) * 2.0 - 1.0
  return np.repeat(x[..., None], 3, axis=-1)


def uint8_to_gray(images: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W] or [N, H, W, C] -> float32 [N, H, W] in [0, 1] (channel mean)."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"expected uint8 images, got {images.dtype}.")
  x = images.astype(np.float32) / 255.0
  if x.ndim == 4:
    x = x.mean(axis=-1)
  if x.ndim != 3:
    raise ValueError(f"expected images [N, H, W] or [N, H, W, C], got shape {images.shape}.")
  return x
