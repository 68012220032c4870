"""The metrics the training step accumulates between flushes (clu.metrics, inside the jit).

  StepMetrics(loop=LoopMetrics, task=<the task's Collection>, nonfinite=FirstNonFinite)

LoopMetrics is what every family reports (means of loss and gradient norm, the last learning
rate); the task adds its own Collection; FirstNonFinite remembers the first step whose loss or
gradient norm was NaN or inf, so the loop can stop before saving without a host sync per step.
Shared by the GRN tasks (C2I, T2I/T2V): the per-element `cross_entropy` and the accuracy per
keep-ratio decile (`KeepRatioAccuracy`), as the official logs.
"""

from clu import metrics as clu_metrics
import flax
import jax
import jax.numpy as jnp
import numpy as np

_NO_STEP = np.iinfo(np.int32).max
NUM_KEEP_BINS = 10  # accuracy per keep-ratio decile, as the official logs


def cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray) -> jnp.ndarray:
  """Per-element CE in float32. logits [..., K], targets int [...] -> float32 [...]."""
  logits = logits.astype(jnp.float32)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return jax.nn.logsumexp(logits, axis=-1) - target_logit


def keep_ratio_bins(keep_ratio: jnp.ndarray) -> jnp.ndarray:
  """Official decile index min(int(t / 0.1), 9). float [B] -> int32 [B]."""
  return jnp.minimum(jnp.floor(keep_ratio / 0.1), NUM_KEEP_BINS - 1).astype(jnp.int32)


@flax.struct.dataclass
class KeepRatioAccuracy(clu_metrics.Metric):
  """Accuracy per keep-ratio decile: sums of per-example accuracies and counts (the official
  all-reduce), reported as `accuracy/keep_0.3_0.4` for the deciles that saw examples. An example
  of weight 0 (`example_weight`, e.g. an empty slot of a packed row) counts nowhere."""
  correct: jnp.ndarray   # float32 [NUM_KEEP_BINS]
  count: jnp.ndarray     # float32 [NUM_KEEP_BINS]

  @classmethod
  def empty(cls) -> "KeepRatioAccuracy":
    return cls(correct=jnp.zeros(NUM_KEEP_BINS, jnp.float32),
               count=jnp.zeros(NUM_KEEP_BINS, jnp.float32))

  @classmethod
  def from_model_output(cls, *, per_example_accuracy, keep_ratio, example_weight=None,
                        **_) -> "KeepRatioAccuracy":
    per_example_accuracy, keep_ratio = per_example_accuracy.reshape(-1), keep_ratio.reshape(-1)
    onehot = jax.nn.one_hot(keep_ratio_bins(keep_ratio), NUM_KEEP_BINS, dtype=jnp.float32)
    if example_weight is not None:
      onehot = onehot * example_weight.reshape(-1, 1).astype(jnp.float32)
    return cls(correct=per_example_accuracy @ onehot, count=jnp.sum(onehot, axis=0))

  def merge(self, other: "KeepRatioAccuracy") -> "KeepRatioAccuracy":
    return KeepRatioAccuracy(self.correct + other.correct, self.count + other.count)

  def compute(self) -> dict[str, float]:
    correct, count = np.asarray(self.correct), np.asarray(self.count)
    return {f"accuracy/keep_{i / 10:.1f}_{(i + 1) / 10:.1f}": correct[i] / count[i]
            for i in range(NUM_KEEP_BINS) if count[i] > 0}


@flax.struct.dataclass
class FirstNonFinite(clu_metrics.Metric):
  """The first step whose loss or gradient norm is not finite (_NO_STEP if none), with both."""
  step: jnp.ndarray        # int32 []
  loss: jnp.ndarray        # float32 []
  grad_norm: jnp.ndarray   # float32 []

  @classmethod
  def empty(cls) -> "FirstNonFinite":
    return cls(step=jnp.array(_NO_STEP, jnp.int32), loss=jnp.array(0, jnp.float32),
               grad_norm=jnp.array(0, jnp.float32))

  @classmethod
  def from_model_output(cls, *, step, loss, grad_norm, **_) -> "FirstNonFinite":
    bad = jnp.logical_not(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    return cls(step=jnp.where(bad, step, _NO_STEP).astype(jnp.int32),
               loss=loss.astype(jnp.float32), grad_norm=grad_norm.astype(jnp.float32))

  def merge(self, other: "FirstNonFinite") -> "FirstNonFinite":
    take = other.step < self.step
    return jax.tree.map(lambda a, b: jnp.where(take, b, a), self, other)

  def compute(self) -> int | None:
    return None if int(self.step) == _NO_STEP else int(self.step)


@flax.struct.dataclass
class LoopMetrics(clu_metrics.Collection):
  """What every family reports: means over the log interval, the last learning rate."""
  loss: clu_metrics.Average.from_output("loss")
  grad_norm: clu_metrics.Average.from_output("grad_norm")
  lr: clu_metrics.LastValue.from_output("lr")


@flax.struct.dataclass
class StepMetrics:
  """The metrics the step accumulates between flushes (replicated, donated)."""
  loop: LoopMetrics
  task: clu_metrics.Collection
  nonfinite: FirstNonFinite

  @classmethod
  def empty(cls, task_metrics: type[clu_metrics.Collection]) -> "StepMetrics":
    return cls(LoopMetrics.empty(), task_metrics.empty(), FirstNonFinite.empty())

  @classmethod
  def of_step(cls, task_metrics: type[clu_metrics.Collection], *, step: jnp.ndarray,
              loss: jnp.ndarray, grad_norm: jnp.ndarray, lr: jnp.ndarray,
              outputs: dict[str, jnp.ndarray]) -> "StepMetrics":
    """The metrics of one step (`step` counts the steps done, this one included)."""
    return cls(LoopMetrics.single_from_model_output(loss=loss, grad_norm=grad_norm, lr=lr),
               task_metrics.single_from_model_output(**outputs),
               FirstNonFinite.from_model_output(step=step, loss=loss, grad_norm=grad_norm))

  def merge(self, other: "StepMetrics") -> "StepMetrics":
    return StepMetrics(self.loop.merge(other.loop), self.task.merge(other.task),
                       self.nonfinite.merge(other.nonfinite))

  def scalars(self) -> dict[str, float]:
    """Host values: the loop's and the task's metrics (a metric computing a dict adds its
    entries under their own names)."""
    out = {}
    for name, value in {**self.loop.compute(), **self.task.compute()}.items():
      out.update({k: float(v) for k, v in value.items()} if isinstance(value, dict)
                 else {name: float(value)})
    return out
