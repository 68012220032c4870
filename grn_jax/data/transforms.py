"""Per-example transforms (grain Map / RandomMap classes)."""

import grain
import numpy as np

from grn_jax.data.images import center_crop_adm


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
