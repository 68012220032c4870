"""Sequence packing of captioned examples into fixed-length training rows (official T2I/T2V
trainer, GRN-SPEC §E.2.4-5).

A row has a visual region of `visual_tokens` (V) slots and a text region of `text_tokens` (L)
slots; up to `max_samples` (S) examples share it:

  visual region  [ x_1 (T1*h1*w1 tokens) s_1 | x_2 ... s_2 | ... | padding ]     V slots
  text region    [ text_1 (l1 tokens) | text_2 | ... | padding ]                   L slots

x_i are example i's visual tokens in (frame, y, x) row-major order and s_i its scale token (the
official layout: all visual segments, then all texts, then padding). Every slot carries the
example it belongs to (`visual_ids`, `text_ids`: 1..S, 0 = padding) and its RoPE position
(frame, height, width): visual token (600 + f, round(y * uph / h), round(x * upw / w)) for the
example's aspect template, the scale token (512, 0, 0), text token p of an example (p, 0, 0).
Attention then follows from the ids alone (grn_jax/models/grn_t2iv.py `packed`): a text token
attends its own example's text; a visual or scale token its own example's visual, scale and
text tokens; padding nothing.

  plan = plan_packs(visual_lengths, text_lengths, spec, seed)   # which examples share a row
  row = pack_row(examples, spec)                                # the row's arrays (numpy)

An example is a dict {'labels': int [T, h, w, D] bit labels, 'features': float [l, text_dim]
(its valid text tokens only), 'h_div_w': float (height / width of the media)}.
"""

import dataclasses
from typing import Any, Sequence

import numpy as np

from grn_jax.models import grn_t2iv

class PackingError(ValueError):
  """An example cannot be packed with the configured row sizes."""


@dataclasses.dataclass(frozen=True)
class PackingSpec:
  """Row sizes (config.packing)."""
  visual_tokens: int   # V: visual and scale tokens per row
  text_tokens: int     # L: text tokens per row
  max_samples: int     # S: examples per row at most

  def __post_init__(self):
    for name in ("visual_tokens", "text_tokens", "max_samples"):
      if int(getattr(self, name)) < 1:
        raise ValueError(f"config.packing.{name} must be >= 1, got {getattr(self, name)}.")


def visual_length(labels_shape: Sequence[int]) -> int:
  """Visual-region slots of an example with labels [T, h, w, D]: T * h * w + 1 (scale token)."""
  frames, height, width = labels_shape[:3]
  return int(frames) * int(height) * int(width) + 1


def plan_packs(visual_lengths: Sequence[int], text_lengths: Sequence[int], spec: PackingSpec,
               seed: int) -> list[tuple[int, ...]]:
  """Which examples share a row: next-fit over a seeded shuffle of the examples (the official
  greedy filling of shuffled examples, without overflowing the row).

  Args:
    visual_lengths: per example, its visual-region slots (`visual_length`).
    text_lengths: per example, its text tokens (the longer of the caption and the dropped-out
      null caption, so that caption dropout never overflows the row).
    spec: the row sizes.
    seed: the shuffle seed.

  Returns:
    Example indices of every row, each row in placement order.

  Raises:
    PackingError: an example is larger than an empty row.
  """
  visual = np.asarray(visual_lengths, np.int64)
  text = np.asarray(text_lengths, np.int64)
  if visual.shape != text.shape or visual.ndim != 1 or not len(visual):
    raise ValueError(f"plan_packs needs equal-length non-empty sequences, got {visual.shape} and "
                     f"{text.shape}.")
  too_big = np.flatnonzero((visual > spec.visual_tokens) | (text > spec.text_tokens))
  if len(too_big):
    i = int(too_big[0])
    raise PackingError(
        f"{len(too_big)} examples do not fit an empty row, e.g. example {i} with {visual[i]} "
        f"visual slots (labels T*h*w + 1 scale token) and {text[i]} text tokens; raise "
        f"config.packing.visual_tokens={spec.visual_tokens} / text_tokens={spec.text_tokens} "
        "or prepare the data at a smaller pixel bucket or duration.")
  packs, current, used_v, used_t = [], [], 0, 0
  for i in np.random.default_rng(seed).permutation(len(visual)):
    if current and (used_v + visual[i] > spec.visual_tokens or
                    used_t + text[i] > spec.text_tokens or len(current) == spec.max_samples):
      packs.append(tuple(current))
      current, used_v, used_t = [], 0, 0
    current.append(int(i))
    used_v += visual[i]
    used_t += text[i]
  packs.append(tuple(current))
  return packs


def row_shapes(spec: PackingSpec, num_labels: int, text_dim: int
               ) -> dict[str, tuple[tuple[int, ...], Any]]:
  """Field -> (shape, numpy dtype) of one packed row."""
  v, l, s = spec.visual_tokens, spec.text_tokens, spec.max_samples
  return {"labels": ((v, num_labels), np.uint8),       # clean bit labels (0 at scale/padding)
          "visual_ids": ((v,), np.int32),              # example 1..S of each slot, 0 = padding
          "text_ids": ((l,), np.int32),
          "positions": ((v + l, 3), np.int32),         # RoPE (frame, height, width)
          "frames": ((s,), np.int32),                  # latent frames per example, 0 = empty
          "features": ((l, text_dim), np.float32)}     # text features, 0 at padding


def pack_row(examples: Sequence[dict[str, Any]], spec: PackingSpec) -> dict[str, np.ndarray]:
  """The arrays of one row (see the module docstring and `row_shapes`).

  Args:
    examples: 1..S examples in placement order.
    spec: the row sizes.
  """
  if not 1 <= len(examples) <= spec.max_samples:
    raise PackingError(f"a row holds 1..{spec.max_samples} examples "
                       f"(config.packing.max_samples), got {len(examples)}.")
  num_labels = examples[0]["labels"].shape[-1]
  text_dim = examples[0]["features"].shape[-1]
  row = {name: np.zeros(shape, dtype)
         for name, (shape, dtype) in row_shapes(spec, num_labels, text_dim).items()}
  v_at = t_at = 0
  for sample, example in enumerate(examples, start=1):
    labels = np.asarray(example["labels"])
    features = np.asarray(example["features"])
    if labels.ndim != 4 or labels.shape[-1] != num_labels:
      raise PackingError(f"labels must be [T, h, w, {num_labels}], got {labels.shape}.")
    if features.ndim != 2 or features.shape[-1] != text_dim:
      raise PackingError(f"text features must be [length, {text_dim}], got {features.shape}.")
    frames, height, width = labels.shape[:3]
    tokens = frames * height * width
    length = len(features)
    if v_at + tokens + 1 > spec.visual_tokens or t_at + length > spec.text_tokens:
      raise PackingError(f"examples of {tokens + 1} visual slots / {length} text tokens overflow "
                         f"the row (config.packing: visual_tokens={spec.visual_tokens}, "
                         f"text_tokens={spec.text_tokens}).")
    visual = slice(v_at, v_at + tokens + 1)
    row["labels"][v_at:v_at + tokens] = labels.reshape(tokens, num_labels)
    row["visual_ids"][visual] = sample
    row["positions"][visual] = np.stack(grn_t2iv.visual_positions(
        frames, height, width, float(example["h_div_w"])), axis=-1)
    text = slice(spec.visual_tokens + t_at, spec.visual_tokens + t_at + length)
    row["text_ids"][t_at:t_at + length] = sample
    row["positions"][text, 0] = np.arange(length)
    row["features"][t_at:t_at + length] = features
    row["frames"][sample - 1] = frames
    v_at, t_at = v_at + tokens + 1, t_at + length
  return row

