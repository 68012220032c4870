"""What the refinement sampler (sampling/refine.py) compiles, traces and returns.

  SamplerSpec      static structure: label shape, steps, schedule, budgets, keep mode, guidance
                   rule, the keep ratio fed to the model, a stop rule, traces. One compiled
                   program per spec.
  SamplerSettings  traced knobs (guidance scale and interval, temperature, entropy map, schedule
                   shift, an optional host-computed keep-ratio table): changing them never
                   recompiles.
  Replay           recorded random draws that replace the sampler's own (initial labels, the
                   categorical draw and the keep uniforms of every step).
  SampleOutput     the result.

Nothing here knows what the model is conditioned on: the family adapter (sampling/c2i.py, ...)
hands the conditioning and its unconditional counterpart to the loop as pytrees.
"""

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

from grn_jax import config_check
from grn_jax.sampling import guidance
from grn_jax.sampling import schedules

# Constants of the official entropy -> steps map (initial GRN commit; fitted for T2I/T2V in the
# 'after_warmup' convention).
OFFICIAL_WARMUP_STEPS = 5
OFFICIAL_ENTROPY_K = 417.7052426732362
OFFICIAL_ENTROPY_B = -318.1272488653967
KEEP_MODES = ("random", "confidence")
ENTROPY_BUDGETS = ("after_warmup", "total")
# The keep ratio fed to the model (and to the guidance rule): the schedule's value at the step
# (official C2I, initial T2I/T2V code) or the fraction of labels the previous step actually kept
# (official T2I/T2V HEAD; 0 at the first step).
MODEL_KEEP_RATIOS = ("nominal", "realised")
# How the conditional and unconditional passes of a guided step run: one forward of the doubled
# batch [cond rows; uncond rows] ('doubled'), or two forwards of the batch, one after the other,
# through one compiled model body ('sequential'). 'auto' picks 'sequential' on CPU, where a
# forward of 2B rows costs about 2.5x one of B rows (GRN-B, batch 8 vs 16), and 'doubled' on
# accelerators, where the larger batch fills the chip better.
GUIDANCE_BATCHING = ("auto", "doubled", "sequential")


@flax.struct.dataclass
class SamplerSettings:
  """Traced sampling knobs (scalars, and an optional table). Changing them never recompiles.

  Attributes:
    cfg_scale: guidance scale w.
    cfg_low, cfg_high: the guidance interval (rule 'interval'; low < 0 selects power-cos with
      exponent -low) or, with rule 'threshold', cfg_low is the threshold x.
    temperature: the logits are divided by it before the categorical draw.
    entropy_k, entropy_b: the entropy -> steps map of adaptive budgets.
    schedule_shift: the shift of the 'cosine' and 'shifted' schedules (official snr_shift).
    keep_table: None, or float32 [num_steps]: t_next of every step, computed on the host
      (Schedule.host_table), instead of the in-graph formula; fixed budgets only.
  """
  cfg_scale: Any = 1.0
  cfg_low: Any = 0.0
  cfg_high: Any = 1.0
  temperature: Any = 1.0
  entropy_k: Any = OFFICIAL_ENTROPY_K
  entropy_b: Any = OFFICIAL_ENTROPY_B
  schedule_shift: Any = 1.0
  keep_table: Any = None

  def as_arrays(self) -> "SamplerSettings":
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), self)


@flax.struct.dataclass
class Replay:
  """Recorded draws that replace the sampler's random ones (a reference trajectory).

  Attributes:
    init_labels: int32 [B, *grid, D], the initial random labels R.
    samples: int32 [S, B, *grid, D], the categorical draw of step s (S >= the loop bound).
    uniforms: float32 [S, B, *grid, D]; step s keeps its prediction where uniform < t_next.
  """
  init_labels: jax.Array
  samples: jax.Array
  uniforms: jax.Array


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
  """Static sampler structure (one compiled program per spec).

  Attributes:
    label_shape: (*grid, D) labels per sample: (h, w, D) for images, (T, h, w, D) for videos.
    label_values: K, the values a label takes (2 for 'bit' labels, 2^rounds for 'ind').
    hbq_rounds, label_mode: to dequantize labels to latents for `decode_fn`.
    num_steps: the fixed budget (and the base grid of the adaptive warm-up).
    schedule: the keep-ratio schedule (schedules.Schedule).
    adaptive: entropy-guided per-row budgets.
    warmup_steps, min_steps, max_steps: adaptive settings (total steps, warm-up included).
    entropy_budget: 'after_warmup' | 'total', what round(k H + b) counts (refine.py docstring).
    keep_mode: 'random' (official) | 'confidence' (keep the most confident predictions).
    model_keep_ratio: 'nominal' | 'realised', the keep ratio the model and the guidance rule
      see (MODEL_KEEP_RATIOS).
    guidance: the guidance rule, guidance.RULES.
    stop_rule: None, or a hashable fn(keep_ratio [B], next_keep_ratio [B], step int32 []) ->
      bool [B]: the rows that stop after this step (e.g. refine.stop_when_input_complete).
    concat_conditions: None (concatenate every leaf of cond and uncond on axis 0), or a
      hashable fn(cond, uncond) -> the conditioning of the doubled batch [cond rows; uncond
      rows], for conditioning whose batch axis is not 0 (used by 'doubled' batching).
    guidance_batching: GUIDANCE_BATCHING, how the two passes of a guided step run.
    trace: also return per-step label maps, predictions, keep masks, entropies, keep ratios.
    trace_probs: with `trace`, also every step's probabilities after guidance and temperature.
    trace_previews: with `trace` and a decode_fn, also decode every step's input and prediction
      (uint8 images) inside the same program.
  """
  label_shape: tuple[int, ...]
  label_values: int
  hbq_rounds: int
  label_mode: str
  num_steps: int = 50
  schedule: schedules.Schedule = schedules.Schedule()
  adaptive: bool = False
  warmup_steps: int = OFFICIAL_WARMUP_STEPS
  min_steps: int = 10
  max_steps: int = 50
  entropy_budget: str = "after_warmup"
  keep_mode: str = "random"
  model_keep_ratio: str = "nominal"
  guidance: str = "interval"
  stop_rule: Callable[..., jax.Array] | None = None
  concat_conditions: Callable[[Any, Any], Any] | None = None
  guidance_batching: str = "auto"
  trace: bool = False
  trace_probs: bool = False
  trace_previews: bool = False

  def __post_init__(self):
    if len(self.label_shape) < 2 or min(self.label_shape) < 1:
      raise ValueError(f"label_shape must be (*grid, D) with positive sizes, got "
                       f"{self.label_shape}.")
    if not isinstance(self.schedule, schedules.Schedule):
      raise TypeError(f"schedule must be a schedules.Schedule, got {self.schedule!r}.")
    for name, value, choices in (
        ("sample.keep_mode", self.keep_mode, KEEP_MODES),
        ("sample.entropy_budget", self.entropy_budget, ENTROPY_BUDGETS),
        ("model_keep_ratio", self.model_keep_ratio, MODEL_KEEP_RATIOS),
        ("guidance_batching", self.guidance_batching, GUIDANCE_BATCHING),
        ("guidance", self.guidance, guidance.RULES),
        ("label_mode", self.label_mode, ("ind", "bit"))):
      config_check.check_choice(name, value, choices)
    if self.num_steps < 1:
      raise ValueError(f"sample.num_steps must be >= 1, got {self.num_steps}.")
    if self.adaptive and not (0 < self.warmup_steps < self.min_steps <= self.max_steps):
      raise ValueError("adaptive sampling needs 0 < warmup_steps < min_steps <= max_steps, got "
                       f"{self.warmup_steps}, {self.min_steps}, {self.max_steps}.")
    if self.adaptive and self.warmup_steps >= self.num_steps:
      raise ValueError(f"sample.warmup_steps={self.warmup_steps} must be < num_steps="
                       f"{self.num_steps} (the base grid of the warm-up).")
    if (self.trace_previews or self.trace_probs) and not self.trace:
      raise ValueError("trace_previews and trace_probs need trace=True.")

  @property
  def loop_bound(self) -> int:
    return max(self.num_steps, self.max_steps) if self.adaptive else self.num_steps

  @property
  def entropy_offset(self) -> int:
    return self.warmup_steps if self.entropy_budget == "after_warmup" else 0


@flax.struct.dataclass
class LoopState:
  """The carry of the refinement `lax.while_loop` (labels [B, *grid, D])."""
  step: jax.Array           # int32 [], global step index
  labels: jax.Array         # int32 [B, *grid, D], the network input z
  random_labels: jax.Array  # int32 [B, *grid, D], R (fixed; the fixed labels where given)
  pred: jax.Array           # int32 [B, *grid, D], last sampled prediction
  realised: jax.Array       # float32 [B], fraction of labels the last step kept (0 at first)
  total_steps: jax.Array    # int32 [B], each row's budget
  done: jax.Array           # bool [B]
  entropy: jax.Array        # float32 [B], H at step `warmup_steps` (else the last step's)
  row_nfe: jax.Array        # int32 [B], evaluations each row needed (1 or 2 per step)
  nfe: jax.Array            # int32 [], evaluations computed (a doubled guided pass counts 2)
  trace: Any                # dict of per-step arrays or None


@flax.struct.dataclass
class SampleOutput:
  labels: jax.Array         # int32 [B, *grid, D], final labels (the last step's prediction)
  images: Any               # decode_fn(latent) or None
  steps: jax.Array          # int32 [B], refinement steps (network passes) used per row
  entropy: jax.Array        # float32 [B], H at step warmup_steps (last step's if never reached)
  row_nfe: jax.Array        # int32 [B], network evaluations each row needed (cond + uncond)
  nfe: jax.Array            # int32 [], evaluations the batch computed (incl. frozen rows)
  trace: Any = None         # dict of per-step maps when spec.trace
