"""Per-example transforms (grain Map / RandomMap classes)."""

import grain
import numpy as np
from PIL import Image


def center_crop_adm(image: np.ndarray, image_size: int) -> np.ndarray:
  """ADM center crop (the official `center_crop_arr`): halve with BOX while the short side is
  >= 2 * image_size, resize the short side to image_size with BICUBIC, crop the centre.

  uint8 [H, W, 3] -> uint8 [image_size, image_size, 3].
  """
  pil = Image.fromarray(np.asarray(image, np.uint8))
  while min(*pil.size) >= 2 * image_size:
    pil = pil.resize(tuple(x // 2 for x in pil.size), resample=Image.BOX)
  scale = image_size / min(*pil.size)
  pil = pil.resize(tuple(round(x * scale) for x in pil.size), resample=Image.BICUBIC)
  arr = np.asarray(pil)
  top = (arr.shape[0] - image_size) // 2
  left = (arr.shape[1] - image_size) // 2
  return np.ascontiguousarray(arr[top:top + image_size, left:left + image_size])


class CenterCrop(grain.transforms.Map):
  """grain Map: {'image'} -> ADM center crop to `image_size`."""

  def __init__(self, image_size: int):
    self.image_size = int(image_size)

  def map(self, element):
    return dict(element, image=center_crop_adm(element["image"], self.image_size))


class RandomFlip(grain.transforms.RandomMap):
  """grain RandomMap: horizontal flip with probability 1/2 (RandomHorizontalFlip)."""

  def random_map(self, element, rng: np.random.Generator):
    if rng.random() < 0.5:
      return dict(element, image=np.ascontiguousarray(element["image"][:, ::-1]))
    return element
