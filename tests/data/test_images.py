"""Image helpers: the ADM center crop, decode errors."""

import io

import numpy as np
import pytest
from PIL import Image

from grn_jax.data import images as images_lib


def test_adm_center_crop_values():
  ramp = np.tile((np.arange(768) // 3).astype(np.uint8)[None, :, None], (512, 1, 3))
  out = images_lib.center_crop_adm(ramp, 256)
  assert out.shape == (256, 256, 3)
  # Short side 512 = 2 * 256: one BOX halving (pairs averaged), scale 1, centre columns.
  cols = ramp[0, :, 0].astype(np.float64).reshape(-1, 2).mean(axis=1)[64:320]
  assert np.abs(out[100, :, 0] - cols).max() <= 1
  small = np.full((40, 60, 3), 77, np.uint8)
  np.testing.assert_array_equal(images_lib.center_crop_adm(small, 64), 77)


def test_center_crop_adm_known_values():
  # A 2x-too-large gradient: one BOX halving, then identity BICUBIC; centre crop.
  img = np.tile(np.arange(128, dtype=np.uint8)[None, :, None], (64, 1, 3))
  out = images_lib.center_crop_adm(img, 32)
  assert out.shape == (32, 32, 3)
  halved = img.reshape(32, 2, 64, 2, 3).mean(axis=(1, 3))
  np.testing.assert_allclose(out, np.round(halved[:, 16:48]), atol=1)
  with pytest.raises(images_lib.ImageDecodeError):
    images_lib.decode_image(b"\x89PNG\r\n\x1a\n garbage", "x.png")


def test_resize_center_crop_covers_then_crops_the_centre():
  # 40 x 120 (h x w), left / middle / right thirds black / grey / white -> cover 32 x 32:
  # scale 0.8 to 32 x 96, then the middle 32 columns: all grey.
  image = np.zeros((40, 120, 3), np.uint8)
  image[:, 40:80], image[:, 80:] = 128, 255
  out = images_lib.resize_center_crop(image, 32, 32)
  assert out.shape == (32, 32, 3) and out.dtype == np.uint8
  assert np.abs(out[:, 4:-4].astype(int) - 128).max() <= 2
  # A tall target on a wide image: height decides the scale; the output is exactly the size.
  assert images_lib.resize_center_crop(image, 64, 16).shape == (64, 16, 3)
  # Large inputs are BOX-halved first (as the ADM crop): a 4x larger copy gives the same crop.
  big = np.repeat(np.repeat(image, 4, 0), 4, 1)
  np.testing.assert_allclose(images_lib.resize_center_crop(big, 32, 32).astype(int), out, atol=3)
  with pytest.raises(ValueError, match="positive"):
    images_lib.resize_center_crop(image, 0, 8)


def test_sixteen_bit_greyscale_is_scaled_and_tiny_images_refused():
  grey = np.array([[0, 257 * 100, 65535]], np.uint16).repeat(2, axis=0)
  buffer = io.BytesIO()
  Image.fromarray(grey).save(buffer, format="PNG")
  decoded = images_lib.decode_image(buffer.getvalue(), "deep.png")
  np.testing.assert_array_equal(decoded[..., 0], [[0, 100, 255]] * 2)  # not clipped to 255
  np.testing.assert_array_equal(decoded[..., 0], decoded[..., 2])
  with pytest.raises(images_lib.ImageDecodeError, match="1 x 1 is too small for 64 x 64"):
    images_lib.center_crop_adm(np.zeros((1, 1, 3), np.uint8), 64)
  assert images_lib.center_crop_adm(np.zeros((16, 20, 3), np.uint8), 64).shape == (64, 64, 3)
