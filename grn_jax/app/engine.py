"""The app's model side (no UI): generate, inpaint and outpaint through one compiled program each.

  engine = Engine(family, params, tok_module, tok_params, num_samples=4)
  result = engine.generate(Request(condition=3, num_steps=40, ...))
  plan = canvas.inpaint_plan(labels, pixels, regenerate, engine.grid)     # or outpaint_plan
  result = engine.edit(plan, request, keep_pixels=True)
  labels = engine.encode(canvas.fit_image(upload, engine.grid))           # an uploaded image

Every request samples `num_samples` rows. One jitted program per (rows fn, editing or not):
the rows fn is the family's sampler for the step count, adaptivity and animation, and guidance,
temperature, the seed and the condition are traced values, so a repeated click never compiles
again; a new step count (a static loop length) compiles once. Editing holds the canvas labels
outside the mask through the sampler's fixed labels (refine.py) in the model-grid window; the
tokenizer decodes inside the same program (and, for a canvas grown past the grid, once more at
the canvas size).

Seeds: generation row r uses split(key(seed), num_samples)[r], exactly as
`sampling.c2i.sample(config, params, classes, jax.random.key(seed))`; edits draw from
fold_in(key(seed), 1), so that an edit with the generation's seed does not replay its draws.
"""

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grn_jax import tokenizer_io
from grn_jax.app import canvas
from grn_jax.app.families import AppFamily

MAX_STEPS = 1000
EDIT_STREAM = 1


@dataclasses.dataclass(frozen=True)
class Request:
  """One click's settings. condition: a class (or, later, a prompt)."""
  condition: Any
  num_steps: int
  cfg_scale: float
  temperature: float
  adaptive: bool
  seed: int
  animate: bool = True

  def check(self) -> None:
    if not 1 <= int(self.num_steps) <= MAX_STEPS:
      raise ValueError(f"steps must be 1 .. {MAX_STEPS}, got {self.num_steps}.")
    if not float(self.temperature) > 0:
      raise ValueError(f"temperature must be > 0, got {self.temperature}.")
    if not float(self.cfg_scale) >= 0:
      raise ValueError(f"guidance must be >= 0 (1 = off), got {self.cfg_scale}.")
    if not 0 <= int(self.seed) < 2**31:
      raise ValueError(f"the seed must be 0 .. 2^31 - 1, got {self.seed}.")


@dataclasses.dataclass
class Result:
  """num_samples results on a canvas of [hc, wc] tokens.

  Attributes:
    labels: int32 [B, hc, wc, D], the HBQ labels of every result.
    decoded: uint8 [B, 16 hc, 16 wc, 3], the tokenizer's decode of `labels`.
    pixels: uint8 [B, 16 hc, 16 wc, 3], what is shown: `decoded`, or with keep_pixels the source
      pixels on the kept tokens (canvas.paste_kept).
    steps, nfe: int32 [B], refinement steps and network evaluations of every row.
    regenerate: bool [hc, wc], the tokens sampled anew (all of them for a generation).
    trace: the sampler's trace with decoded previews (for the animation), or None.
  """
  labels: np.ndarray
  decoded: np.ndarray
  pixels: np.ndarray
  steps: np.ndarray
  nfe: np.ndarray
  regenerate: np.ndarray
  trace: dict[str, Any] | None


@functools.lru_cache(maxsize=32)
def _runner(rows_fn):
  """jit(params, conditions, seed, settings, decode_params, fixed_labels, fixed_mask)."""

  @jax.jit
  def run(params, conditions, seed, settings, decode_params, fixed_labels, fixed_mask):
    key = jax.random.key(seed)
    if fixed_labels is not None:
      key = jax.random.fold_in(key, EDIT_STREAM)
    batch = jax.tree.leaves(conditions)[0].shape[0]
    out = rows_fn(params, conditions, jax.random.split(key, batch), settings, decode_params,
                  fixed_labels=fixed_labels, fixed_mask=fixed_mask)
    return out.replace(images=tokenizer_io.to_uint8(out.images))

  return run


class Engine:
  """A family's model, its tokenizer and the compiled programs of the app."""

  def __init__(self, family: AppFamily, params: Any, tok_module: Any, tok_params: Any,
               num_samples: int = 4):
    if num_samples < 1:
      raise ValueError(f"num_samples must be >= 1, got {num_samples}.")
    self.family = family
    self.grid = tuple(family.grid)
    self.num_samples = int(num_samples)
    self.params = jax.device_put(params)
    self.tok_params = jax.device_put(tok_params)
    self.decode_fn = tokenizer_io.TokenizerDecode(tok_module)
    rounds, mode = family.spec.hbq_rounds, family.spec.label_mode
    self._encode = tokenizer_io.make_encode_fn(tok_module, rounds, mode)
    self._decode = jax.jit(lambda p, labels: tokenizer_io.to_uint8(
        tokenizer_io.decode_labels(tok_module, p, labels, rounds, mode)))

  @property
  def image_size(self) -> tuple[int, int]:
    return self.grid[0] * canvas.TOKENIZER_STRIDE, self.grid[1] * canvas.TOKENIZER_STRIDE

  def _run(self, request: Request, fixed_labels=None, fixed_mask=None):
    request.check()
    rows = self.family.rows_fn(int(request.num_steps), bool(request.adaptive),
                               bool(request.animate), self.decode_fn)
    conditions = self.family.conditions(request.condition, self.num_samples)
    out = _runner(rows)(self.params, conditions, np.int32(request.seed),
                        self.family.settings(request.cfg_scale, request.temperature).as_arrays(),
                        self.tok_params, fixed_labels, fixed_mask)
    return jax.device_get(out)

  def generate(self, request: Request) -> Result:
    """num_samples new images of request.condition."""
    out = self._run(request)
    images = np.asarray(out.images)
    return Result(labels=np.asarray(out.labels), decoded=images, pixels=images,
                  steps=np.asarray(out.steps), nfe=np.asarray(out.row_nfe),
                  regenerate=np.ones(self.grid, bool), trace=out.trace)

  def edit(self, plan: canvas.EditPlan, request: Request, keep_pixels: bool = True) -> Result:
    """num_samples variants of the canvas with plan.regenerate sampled anew.

    The window's kept labels are fixed labels of the sampler; tokens outside the window are
    copied. keep_pixels pastes the source pixels back on every kept token.
    """
    rows, cols = plan.window_slices(self.grid)
    window = plan.labels[rows, cols]
    batch = (self.num_samples,) + window.shape
    fixed_mask = np.broadcast_to(~plan.regenerate[rows, cols, None], batch)
    out = self._run(request, np.broadcast_to(window, batch).astype(np.int32),
                    np.ascontiguousarray(fixed_mask))
    labels = np.repeat(plan.labels[None], self.num_samples, axis=0)
    labels[:, rows, cols] = np.asarray(out.labels)
    kept = ~plan.regenerate
    if not np.array_equal(labels[:, kept], np.broadcast_to(plan.labels[kept], labels[:, kept].shape)):
      raise RuntimeError("the sampler changed fixed labels; this is a bug in the fixed-label path.")
    if labels.shape[1:3] == self.grid:
      decoded = np.asarray(out.images)
    else:
      decoded = self.decode(labels)
    pixels = canvas.paste_kept(decoded, plan.pixels, plan.regenerate) if keep_pixels else decoded
    return Result(labels=labels, decoded=decoded, pixels=pixels, steps=np.asarray(out.steps),
                  nfe=np.asarray(out.row_nfe), regenerate=plan.regenerate, trace=out.trace)

  def encode(self, image: np.ndarray) -> np.ndarray:
    """uint8 [16 h, 16 w, 3] at the model's resolution -> HBQ labels int32 [h, w, D]."""
    if image.shape != self.image_size + (3,):
      raise ValueError(f"encode takes the model's resolution {self.image_size}, got "
                       f"{image.shape}; fit uploads with canvas.fit_image first.")
    return np.asarray(self._encode(self.tok_params, image[None]))[0]

  def decode(self, labels: np.ndarray) -> np.ndarray:
    """HBQ labels int [B, hc, wc, D] (any canvas) -> uint8 [B, 16 hc, 16 wc, 3]."""
    return np.asarray(self._decode(self.tok_params, jnp.asarray(labels, jnp.int32)))
