"""Captioned training examples (T2I / T2V) and their packed, checkpointable training stream.

An example is a dict
  labels    uint8 [T, h, w, D]   clean HBQ bit labels (T latent frames, 1 for an image)
  features  float [l, text_dim]  umT5 features of the caption's valid tokens (EOS included)
  h_div_w   float                height / width of the media (the aspect template of its RoPE)
  short_features  float [s, text_dim]  optional: the short caption's (captioned_media.py)

A source is random access (`len`, `[i]`) and also gives `lengths()` (visual slots and text tokens
of every example, without decoding them) and `null_features` (the empty prompt's features, for
caption dropout). Two sources exist: `CaptionedArrays` (in memory: tests, the CPU demos) and
`grn_jax.data.captioned_shards.CaptionedShardSource` (prepared once by
`python -m grn_jax.data.tokenize_captioned`).

The stream (`make_packed_iterator`): the examples are planned into rows once
(`packing.plan_packs`, a seeded next-fit); grain shuffles the rows every epoch, and each row is
packed when read (`PackRow`), its captions dropped to the empty prompt with probability
caption_drop_prob, and the others that have a short caption replaced by it with probability
short_caption_prob (seeded by the row's global index, so the same on any process count and after
a resume; a row reserves text slots for the longest of the three). Element k of the stream is
the same everywhere; each process reads its rows of every global batch
(grn_jax/data/pipeline.py).
"""

import dataclasses
from typing import Any, Sequence

import grain
import numpy as np

from grn_jax.data import packing
from grn_jax.data import pipeline


@dataclasses.dataclass
class CaptionedArrays:
  """In-memory captioned examples (see the module docstring) and the empty prompt's features
  null_features float [l0, text_dim]."""
  examples: Sequence[dict[str, Any]]
  null_features: np.ndarray

  def __post_init__(self):
    self.null_features = np.asarray(self.null_features, np.float32)
    if not len(self.examples):
      raise ValueError("CaptionedArrays needs at least one example.")
    if self.null_features.ndim != 2 or not len(self.null_features):
      raise ValueError(f"null_features must be float [length >= 1, text_dim], got "
                       f"{self.null_features.shape}.")
    for i, example in enumerate(self.examples):
      check_example(example, self.null_features.shape[-1], f"example {i}")

  def __len__(self) -> int:
    return len(self.examples)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return self.examples[int(index)]

  def lengths(self) -> tuple[np.ndarray, np.ndarray]:
    """(visual slots int [N], text tokens int [N]: the longer of the caption and the short
    caption) of the examples."""
    return (np.array([packing.visual_length(e["labels"].shape) for e in self.examples]),
            np.array([max(len(e["features"]), len(e.get("short_features", ())))
                      for e in self.examples]))


def check_example(example: dict[str, Any], text_dim: int, where: str) -> None:
  """Raises ValueError naming `where` for an example of the wrong form."""
  missing = {"labels", "features", "h_div_w"} - set(example)
  if missing:
    raise ValueError(f"{where} lacks {sorted(missing)} (an example is {{'labels': uint8 [T, h, "
                     "w, D], 'features': float [l, text_dim], 'h_div_w': float}).")
  labels = np.asarray(example["labels"])
  if labels.ndim != 4 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: labels must be integer bits [T, h, w, D], got {labels.dtype} "
                     f"{labels.shape}.")
  if labels.size and labels.max() > 1:
    raise ValueError(f"{where}: labels must be bits (0 or 1), got a {labels.max()}; use the "
                     "'bit' label mode.")
  for name in ("features", "short_features")[:1 + ("short_features" in example)]:
    features = np.asarray(example[name])
    if features.ndim != 2 or features.shape[-1] != text_dim or not len(features):
      raise ValueError(f"{where}: {name} must be float [length >= 1, {text_dim}] (the null "
                       f"prompt's text_dim), got {features.shape}.")
  if not float(example["h_div_w"]) > 0:
    raise ValueError(f"{where}: h_div_w must be > 0, got {example['h_div_w']}.")


class PlanSource:
  """Row r of a packing plan -> {'row': r} (the examples are read by `PackRow`)."""

  def __init__(self, plan: Sequence[tuple[int, ...]]):
    self.plan = list(plan)

  def __len__(self) -> int:
    return len(self.plan)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {"row": np.int64(index)}


class PackRow(grain.transforms.RandomMap):
  """{'row': r} -> the packed row (grn_jax/data/packing.py `row_shapes`), captions dropped to
  the empty prompt with probability `drop_prob` each, the others that have a short caption
  replaced by it with probability `short_prob`."""

  def __init__(self, source, plan: Sequence[tuple[int, ...]], spec: packing.PackingSpec,
               drop_prob: float, short_prob: float = 0.0):
    self.source, self.plan, self.spec = source, plan, spec
    self.drop_prob, self.short_prob = float(drop_prob), float(short_prob)

  def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    examples = [self.source[i] for i in self.plan[int(element["row"])]]
    drop = rng.random(len(examples)) < self.drop_prob
    short = rng.random(len(examples)) < self.short_prob   # drawn after `drop`: same drops
    examples = [dict(e, features=self.source.null_features) if d else
                dict(e, features=e["short_features"]) if s and "short_features" in e else e
                for e, d, s in zip(examples, drop, short)]
    return packing.pack_row(examples, self.spec)


def plan_rows(source, spec: packing.PackingSpec, seed: int) -> list[tuple[int, ...]]:
  """The packing plan of a source (text slots reserved for the longest of the caption, the
  short caption and the null prompt, so that neither caption dropout nor the short caption
  overflows a row)."""
  visual, text = source.lengths()
  text = np.maximum(text, len(source.null_features))
  return packing.plan_packs(visual, text, spec, seed)


def make_packed_iterator(source, spec: packing.PackingSpec, *, seed: int, global_batch: int,
                         drop_prob: float, short_prob: float = 0.0,
                         rows: tuple[int, int] | None = None, num_workers: int = 0
                         ) -> pipeline.TrainIterator:
  """The shuffled, repeated stream of packed rows; `num_examples` of the result is the number
  of rows of the plan (an epoch).

  Args:
    source: CaptionedArrays or CaptionedShardSource.
    spec: the row sizes (config.packing).
    seed: plan, shuffle and caption-dropout seed.
    global_batch: rows per global batch (config.train.global_batch_size).
    drop_prob: caption dropout (config.corruption.caption_drop_prob).
    short_prob: short captions (config.corruption.short_caption_prob).
    rows: this process's rows of every global batch.
    num_workers: grain read threads.
  """
  plan = plan_rows(source, spec, seed)
  if len(plan) < global_batch:
    raise ValueError(f"the {len(source)} examples pack into {len(plan)} rows, fewer than "
                     f"config.train.global_batch_size={global_batch}; add data or lower the "
                     "batch (or config.packing sizes).")
  return pipeline.make_iterator(PlanSource(plan),
                                [PackRow(source, plan, spec, drop_prob, short_prob)], seed=seed,
                                global_batch=global_batch, rows=rows, num_workers=num_workers)
