"""Per-example transforms (grain Map / RandomMap classes)."""

import grain
import numpy as np


class RandomFlip(grain.transforms.RandomMap):
  """grain RandomMap: horizontal flip with probability 1/2 (RandomHorizontalFlip)."""

  def random_map(self, element, rng: np.random.Generator):
    if rng.random() < 0.5:
      return dict(element, image=np.ascontiguousarray(element["image"][:, ::-1]))
    return element
