"""What the app needs from a model family: its condition widget, grid and sampler rows.

A family plugs into the app through a small adapter (`AppFamily`): the kind of condition the
user gives (a class picker for C2I; a prompt box for the text-conditioned families when their
sampler lands), the model's latent grid, the default settings, and a hashable rows function
(the family's sampling adapter, e.g. sampling/c2i.py `ClassRows`) for a given step count,
adaptivity and trace. Everything else (the loop, fixed labels for editing, the tokenizer, the
animation) is the same for every family.

How the text-conditioned families plug in (not wired yet: their sampler, sampling/t2iv.py, is
not on this branch): a `T2IApp` with condition_kind = 'prompt' registered in FAMILIES under
't2i'. Its `conditions(prompt, batch)` encodes the prompt with umT5 (the prompt pipeline's
`encode_prompts`) and returns the padded features and mask of `batch` rows; its `rows_fn` wraps
the prompt rows of sampling/t2iv.py (text prefix, loop, decode in one program) for one latent
frame, taking and returning labels [B, h, w, D] (the frame axis T = 1 dropped) so that the
canvas, masks, fixed labels and the animation of the app apply as they are; a fixed prompt
length bucket keeps one compiled program per grid. The page already shows a prompt box for
condition_kind 'prompt'. Video (T2V, I2V) needs a frame axis in the canvas and a video player
on the page.
"""

import dataclasses
from typing import Any, Callable, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import checkpointing
from grn_jax.sampling import c2i
from grn_jax.sampling.spec import SamplerSettings, SamplerSpec


class AppFamily(Protocol):
  """A model family as the app sees it (C2IApp below)."""

  condition_kind: str            # 'class' (a picker) or 'prompt' (a text box)
  spec: SamplerSpec              # the config's sampler structure (labels, HBQ rounds and mode)
  grid: tuple[int, int]          # the latent tokens (h, w) the model samples
  defaults: dict[str, Any]       # num_steps, cfg_scale, temperature, adaptive, steps_range

  def condition_choices(self) -> list[tuple[str, int]]:
    """(shown name, value) of every class; [] for prompts."""

  def conditions(self, condition: Any, batch: int) -> Any:
    """The host conditioning pytree [batch] of one user condition (errors say what is valid)."""

  def condition_text(self, condition: Any) -> str:
    """How the app names one user condition in what it reports ("class 3", a quoted prompt)."""

  def settings(self, cfg_scale: float, temperature: float) -> SamplerSettings:
    """The traced settings of one request (the rest from the config)."""

  def rows_fn(self, num_steps: int, adaptive: bool, trace: bool,
              decode_fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """Hashable fn(params, conditions, keys [B], settings, decode_params, *, fixed_labels,
    fixed_mask) -> SampleOutput; the same arguments give an equal fn (one compilation)."""

  def check_params(self, params: Any, what: str) -> None:
    """Raises ValueError listing the keys / shapes of params that do not fit the model."""

  def describe(self) -> str:
    """One line: the model, its grid and classes (shown at the top of the app)."""


class C2IApp:
  """Class-to-image: a class picker; the null class is the unconditional counterpart."""

  condition_kind = "class"

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.spec = c2i.spec_from_config(config)    # checks config.sample, naming the field
    self.num_classes = int(config.model.num_classes)
    self.grid = tuple(self.spec.label_shape[:2])
    sample_cfg = config.sample
    self.defaults = dict(
        num_steps=int(sample_cfg.num_steps), cfg_scale=float(sample_cfg.cfg_scale),
        temperature=float(sample_cfg.temperature), adaptive=bool(sample_cfg.adaptive),
        steps_range=(int(sample_cfg.min_steps), int(sample_cfg.max_steps)))

  def condition_choices(self) -> list[tuple[str, int]]:
    return [(f"class {c}", c) for c in range(self.num_classes)]

  def conditions(self, condition: Any, batch: int) -> np.ndarray:
    """int32 [batch], the class everywhere."""
    try:
      label = int(condition)
    except (TypeError, ValueError) as e:
      raise ValueError(f"the class must be a number 0 .. {self.num_classes - 1}, got "
                       f"{condition!r}.") from e
    if not 0 <= label < self.num_classes:
      raise ValueError(f"the class must be 0 .. {self.num_classes - 1}, got {label}.")
    return np.full((batch,), label, np.int32)

  def condition_text(self, condition: Any) -> str:
    return f"class {int(condition)}"

  def settings(self, cfg_scale: float, temperature: float) -> SamplerSettings:
    return c2i.settings_from_config(self.config.sample).replace(
        cfg_scale=float(cfg_scale), temperature=float(temperature))

  def rows_fn(self, num_steps: int, adaptive: bool, trace: bool, decode_fn) -> c2i.ClassRows:
    spec = c2i.spec_from_config(self.config, adaptive, trace=trace, trace_previews=trace)
    if not adaptive:  # adaptive budgets keep the config's warm-up grid and bounds
      spec = dataclasses.replace(spec, num_steps=int(num_steps))
    return c2i.ClassRows(c2i.model_apply(self.config), spec, self.num_classes, decode_fn)

  def check_params(self, params: Any, what: str) -> None:
    module = c2i.model_apply(self.config).module
    abstract = jax.eval_shape(
        module.init, jax.random.key(0),
        jnp.zeros((1,) + self.spec.label_shape, jnp.int32), jnp.zeros((1,)),
        jnp.zeros((1,), jnp.int32))
    checkpointing.check_tree_matches(params, nn.unbox(abstract)["params"], what=what)

  def describe(self) -> str:
    model = self.config.model
    return (f"class-to-image GRN `{model.name}` ({self.num_classes} classes), a grid of "
            f"{self.grid[0]} x {self.grid[1]} latent tokens, {self.spec.label_shape[-1]} HBQ "
            f"labels each")


FAMILIES: dict[str, Callable[[ml_collections.ConfigDict], AppFamily]] = {"c2i": C2IApp}


def family_of(config: ml_collections.ConfigDict) -> AppFamily:
  """The app family of config.task (errors list the tasks the app knows)."""
  if config.task not in FAMILIES:
    raise ValueError(f"config.task={config.task!r}: the app knows the tasks {sorted(FAMILIES)}.")
  return FAMILIES[config.task](config)
