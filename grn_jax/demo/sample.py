"""Demo sampling on top of grn_jax.sampling: digits as uint8 images, and refinement frames.

Uses the project sampler (one-jit refinement loop, fixed or entropy-adaptive steps, per-step
trace) with the settings in config.sample, then decodes the HBQ labels with the demo tokenizer
(grn_jax.tokenizer_io).
"""

from typing import Any

import jax
import ml_collections
import numpy as np

from grn_jax import models
from grn_jax import sampling
from grn_jax import tokenizer_io


def _decode_fn(config: ml_collections.ConfigDict):
  """jit((tokenizer params, labels) -> images in [-1, 1]) of config.tokenizer."""
  return tokenizer_io.make_decode_fn(models.build_tokenizer(config.tokenizer),
                                     config.model.hbq_rounds, config.model.label_mode)


def sample_images(config: ml_collections.ConfigDict, params: Any, tok_params: Any,
                  class_labels: np.ndarray, adaptive: bool, seed: int) -> dict[str, np.ndarray]:
  """Samples one digit per entry of class_labels int [N] in batches of config.sample.batch_size.

  Returns:
    dict(images=uint8 [N, H, W, 3], steps=int32 [N] refinement steps used per sample).
  """
  decode = _decode_fn(config)
  batch = int(config.sample.batch_size)
  class_labels = np.asarray(class_labels, np.int32)
  pad = (-len(class_labels)) % batch
  padded = np.concatenate([class_labels, np.zeros(pad, np.int32)])
  images, steps = [], []
  key = jax.random.key(seed)
  for i in range(0, len(padded), batch):
    labels, used = sampling.sample_labels(config, params, padded[i:i + batch],
                                          jax.random.fold_in(key, i), adaptive=adaptive)
    images.append(np.asarray(tokenizer_io.to_uint8(decode(tok_params, labels))))
    steps.append(np.broadcast_to(np.asarray(used, np.int32), (batch,)))
  n = len(class_labels)
  return dict(images=np.concatenate(images)[:n], steps=np.concatenate(steps)[:n])


def refinement_frames(config: ml_collections.ConfigDict, params: Any, tok_params: Any,
                      class_labels: np.ndarray, seed: int) -> np.ndarray:
  """Decoded label maps after every refinement step: uint8 [steps + 1, N, H, W, 3]
  (frame 0 = the initial random labels)."""
  decode = _decode_fn(config)
  trajectory = np.asarray(sampling.sample_trajectory(
      config, params, np.asarray(class_labels, np.int32), jax.random.key(seed)))
  return np.stack([np.asarray(tokenizer_io.to_uint8(decode(tok_params, labels)))
                   for labels in trajectory])
