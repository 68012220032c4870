"""The one training loop of every model family: `train(config, workdir, dataset=None)`.

  python -m grn_jax.main --mode=train --config=configs/c2i.py:variant=B --workdir=DIR
  state = loop.train(config, workdir)                    # the family comes from config.task
  compiled = loop.compile_train_step(config, mesh)       # the same step, compiled, no arrays

A family brings a task (grn_jax/trainers/task.py: the protocol and the TASKS registry; c2i.py,
tokenizer.py): how to init its params, its pure loss, its batch spec, its input iterator, the host
-> device batch preparation, its metrics and its sampling hook. The loop does the rest, the same
for all:

  * mesh ('data', 'fsdp', 'tensor') from config.mesh; the state is sharded by the logical axis
    rules: eval_shape(init) -> partition specs -> jit(init, out_shardings);
  * ONE step program (`build_program`): jit(step, in/out shardings, donated state and metrics),
    lowered on abstract inputs and compiled once. Building it creates no array: the init inputs
    and the key of config.seed live inside the jitted functions, so the program can be compiled
    for any device mesh (e.g. a TPU topology on a CPU host);
  * input: the task's iterator yields this process's rows of every global batch (grain, state
    checkpointed); the task's `prepare` makes the global device batch (e.g. HBQ labels from
    images through the frozen tokenizer);
  * Orbax checkpoints (state, EMAs, iterator state, config), async, keep the latest N; resume
    from the workdir's latest checkpoint; save on SIGTERM (or a multi-host preemption notice)
    and stop; `train.init_from` starts from a params directory;
  * metrics: clu.metrics Collections (the loop's loss, grad_norm and lr, plus the task's),
    accumulated inside the step, flushed every log_every_steps with examples/s, tokens/s and
    MFU to the clu writers (TensorBoard and a log line); the first non-finite loss or gradient
    norm stops the run at the next flush or save, naming its step and keeping the last good
    checkpoint;
  * progress (clu ReportProgress) and an optional sampling hook every sample_every_steps.

Randomness: the step's key is fold_in(key(config.seed), step), so a resumed run draws the
numbers of an uninterrupted one, and (partitionable threefry) the same on any mesh.
"""

import dataclasses
import math
import signal
import threading
import time
from typing import Any, Callable, Sequence

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from grn_jax import checkpointing
from grn_jax import flops
from grn_jax import sharding
from grn_jax.data import pipeline
from grn_jax.trainers import metrics as metrics_lib
from grn_jax.trainers import task as task_lib
from grn_jax.trainers import state as state_lib

# Signals that make the run save a checkpoint and stop.
STOP_SIGNALS = (signal.SIGTERM,)

# hook(step, scalars): after every step; `scalars` holds the metrics at the steps they are flushed.
Hook = Callable[[int, dict[str, float] | None], None]


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss or gradient norm is NaN or inf."""


def _batch_shardings(task: task_lib.Task, mesh: jax.sharding.Mesh, rules) -> dict[str, Any]:
  return {name: jax.sharding.NamedSharding(mesh, nn.logical_to_mesh_axes(axes, rules))
          for name, (_, axes) in task.batch_spec().items()}


@dataclasses.dataclass
class TrainProgram:
  """The training program of a config on a mesh; abstract until `init` or `compile`.

  Attributes:
    abstract_state: the TrainState as ShapeDtypeStructs with their shardings.
    abstract_batch / abstract_metrics: the step's other inputs, likewise.
    jitted: jit(step, in/out shardings, donate state and metrics):
      (state, batch, metrics) -> (state of step + 1, metrics merged with this step's).
  """
  task: task_lib.Task
  mesh: jax.sharding.Mesh
  tx: optax.GradientTransformation
  lr_fn: optax.Schedule
  abstract_state: state_lib.TrainState
  state_shardings: Any
  batch_shardings: dict[str, jax.sharding.Sharding]
  abstract_batch: dict[str, jax.ShapeDtypeStruct]
  abstract_metrics: metrics_lib.StepMetrics
  jitted: Any
  _init: Callable[[], state_lib.TrainState]
  _empty_metrics: Callable[[], metrics_lib.StepMetrics]

  def lower(self) -> jax.stages.Lowered:
    with jax.set_mesh(self.mesh):
      return self.jitted.lower(self.abstract_state, self.abstract_batch, self.abstract_metrics)

  def compile(self) -> jax.stages.Compiled:
    """The step, compiled once for the abstract inputs (calling it never recompiles)."""
    return self.lower().compile()

  def init(self) -> state_lib.TrainState:
    """The initial state, every leaf created on its sharding (one jit)."""
    with jax.set_mesh(self.mesh):
      return self._init()

  def empty_metrics(self) -> metrics_lib.StepMetrics:
    return self._empty_metrics()

  def with_params(self, state: state_lib.TrainState, params: Any) -> state_lib.TrainState:
    """`state` with `params` as its parameters and every EMA (init_from); state is donated."""
    replace = lambda s, p: s.replace(params=p, ema_params=tuple(
        jax.tree.map(jnp.copy, p) for _ in s.ema_params))
    return jax.jit(replace, out_shardings=self.state_shardings, donate_argnums=0)(state, params)


def build_program(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                  num_examples: int | None = None, task: task_lib.Task | None = None
                  ) -> TrainProgram:
  """The abstract state, shardings and jitted step of `config` on `mesh`; creates no array.

  Args:
    config: a config of a registered task.
    mesh: the device mesh (devices of this host, of a pod, or of a TPU topology for AOT).
    num_examples: the data set's size, for the epoch length of the schedule (default
      config.train.train_examples).
    task: the task, if already built from `config`.
  """
  task = task or task_lib.make_task(config)
  rules = sharding.rules_from_config(config.sharding_rules)
  tx = state_lib.make_optimizer(config, num_examples, task.param_groups)
  lr_fn = state_lib.learning_rate_fn(config, num_examples)
  decays = tuple(float(d) for d in config.train.ema_decays)
  init_batch = batch_shards(config, mesh)[1]
  seed = int(config.seed)

  def init():
    params = task.init_params(jax.random.key(seed), init_batch)
    return state_lib.init_state(params, tx, len(decays))

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(init)
  unboxed = nn.unbox(boxed)
  # Logical specs give the empty optax.MaskedNode (frozen-param slots) a sharding; put the
  # node back so that the sharding tree has the state's structure.
  is_masked = lambda x: isinstance(x, optax.MaskedNode)
  state_shardings = jax.tree.map(lambda x, s: x if is_masked(x) else s, unboxed,
                                 sharding.logical_shardings(boxed, mesh, rules),
                                 is_leaf=is_masked)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unboxed, state_shardings)

  batch_shardings = _batch_shardings(task, mesh, rules)
  abstract_batch = {name: jax.ShapeDtypeStruct(struct.shape, struct.dtype,
                                               sharding=batch_shardings[name])
                    for name, (struct, _) in task.batch_spec().items()}
  replicated = sharding.replicated(mesh)
  empty = lambda: metrics_lib.StepMetrics.empty(task.metrics)
  abstract_metrics = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
      jax.eval_shape(empty))

  def step(state, batch, metrics):
    with nn.logical_axis_rules(rules):
      key = jax.random.fold_in(jax.random.key(seed), state.step)
      (loss, outputs), grads = jax.value_and_grad(task.loss, has_aux=True)(
          state.params, batch, key)
      new_state, grad_norm = state_lib.apply_gradients(state, grads, tx, decays,
                                                       task.param_groups)
    update = metrics_lib.StepMetrics.of_step(
        task.metrics, step=new_state.step, loss=loss, grad_norm=grad_norm,
        lr=jnp.asarray(lr_fn(state.step), jnp.float32), outputs=outputs)
    return new_state, metrics.merge(update)

  jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0, 2))
  init_jit = jax.jit(lambda: nn.unbox(init()), out_shardings=state_shardings)
  return TrainProgram(task=task, mesh=mesh, tx=tx, lr_fn=lr_fn, abstract_state=abstract_state,
                      state_shardings=state_shardings, batch_shardings=batch_shardings,
                      abstract_batch=abstract_batch, abstract_metrics=abstract_metrics,
                      jitted=jitted, _init=_with_rules(init_jit, rules),
                      _empty_metrics=jax.jit(empty, out_shardings=replicated))


def _with_rules(fn: Callable, rules) -> Callable:
  def run(*args):
    with nn.logical_axis_rules(rules):
      return fn(*args)
  return run


def compile_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh,
                       num_examples: int | None = None) -> jax.stages.Compiled:
  """The training step of `config` compiled for `mesh` from abstract inputs (no array is
  created): call it as compiled(state, batch, metrics), or read memory_analysis()."""
  return build_program(config, mesh, num_examples).compile()


def batch_shards(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                 ) -> tuple[tuple[str, ...], int]:
  """(mesh axes of the 'batch' logical axis, their size): ('data', 'fsdp') by default; only
  'data' when config.sharding_rules shard the sequence over 'fsdp' instead."""
  rules = sharding.rules_from_config(config.sharding_rules)
  axes = nn.logical_to_mesh_axes(("batch",), rules)[0]
  axes = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
  return axes, int(math.prod(mesh.shape[a] for a in axes))


def check_batch(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh) -> None:
  """The global batch splits over the mesh's batch devices and the processes."""
  batch = config.train.global_batch_size
  axes, shards = batch_shards(config, mesh)
  if batch % shards:
    raise ValueError(f"config.train.global_batch_size={batch} must be divisible by the "
                     f"{' x '.join(axes)} mesh size {shards}.")
  if batch % jax.process_count():
    raise ValueError(f"config.train.global_batch_size={batch} must be divisible by the "
                     f"{jax.process_count()} processes.")


def _process_rows(config, mesh, batch_shardings) -> tuple[int, int]:
  """This process's rows of every global batch (the same for every batch field)."""
  leading = {s.spec[0] if len(s.spec) else None for s in batch_shardings.values()}
  if len(leading) != 1:
    raise ValueError(f"the batch fields shard their leading axis differently ({leading}); "
                     "every batch field must use the logical axis 'batch' first.")
  rows_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(leading.pop()))
  return pipeline.process_rows(config.train.global_batch_size, rows_sharding)


def _check_finite(nonfinite: metrics_lib.FirstNonFinite, last_saved: int | None) -> None:
  step = nonfinite.compute()
  if step is not None:
    raise NonFiniteLossError(
        f"loss {float(nonfinite.loss)} / grad norm {float(nonfinite.grad_norm)} at step {step} "
        f"is not finite; stopping. The last good checkpoint (step {last_saved}) is kept in the "
        "workdir. Lower config.optim.blr, check config.optim.grad_clip_norm or compute in "
        "float32 (the model section's dtype).")


class _StopSignals:
  """`.received` turns True on STOP_SIGNALS (main thread only); old handlers come back on exit."""

  def __init__(self, signals: Sequence[int] = STOP_SIGNALS):
    self.received, self._signals, self._old = False, tuple(signals), {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = {s: signal.signal(s, self._handle) for s in self._signals}
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning("%s received: saving a checkpoint and stopping.",
                    signal.Signals(signum).name)
    self.received = True

  def __exit__(self, *exc):
    for s, old in self._old.items():
      signal.signal(s, old)


def _restore_or_init(program: TrainProgram, ckpt: checkpointing.TrainCheckpointer,
                     data_iter: pipeline.TrainIterator, config: ml_collections.ConfigDict,
                     workdir: str) -> tuple[state_lib.TrainState, int | None]:
  """(state, step of the checkpoint it came from or None): the latest checkpoint of the
  workdir with its iterator state, else a new state (from train.init_from if set)."""
  latest = ckpt.latest_step()
  if latest is not None:
    logging.info("Resuming from %s/checkpoints/%d.", workdir, latest)
    state, data_state = ckpt.restore(latest, program.abstract_state)
    data_iter.set_state(data_state)
    return state, latest
  state = program.init()
  if config.train.init_from:
    logging.info("Initialising params (and EMAs) from %s.", config.train.init_from)
    params = checkpointing.restore_params(config.train.init_from,
                                          program.abstract_state.params)
    state = program.with_params(state, params)
  return state, None


def _compiler_flops_per_example(compiled: jax.stages.Compiled, mesh, global_batch: int) -> float:
  """The compiler's FLOP count of the step (per device, times the devices) per example."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float((cost or {}).get("flops", 0.0)) * mesh.size / global_batch


class _Reporter:
  """The one metrics flush (device metrics -> scalars, rates, MFU -> the clu writers) and the
  progress line."""

  def __init__(self, config: ml_collections.ConfigDict, task: task_lib.Task, workdir: str,
               compiled: jax.stages.Compiled, mesh, step: int, num_steps: int, fresh: bool):
    train_cfg = config.train
    self.writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0)
    if fresh:
      self.writer.write_hparams({k: v for k, v in checkpointing.config_to_dict(config).items()
                                 if isinstance(v, (int, float, str, bool))})
    self.progress = periodic_actions.ReportProgress(
        num_train_steps=num_steps, writer=self.writer, every_steps=train_cfg.log_every_steps,
        every_secs=None)
    self.batch_size, self.tokens = train_cfg.global_batch_size, task.tokens_per_example
    self.flops = task.model_flops_per_example()
    if self.flops is None:
      self.flops = _compiler_flops_per_example(compiled, mesh, self.batch_size)
    self.peak = (flops.run_peak_flops(train_cfg.peak_flops_per_device, task.compute_dtype)
                 if self.flops > 0 else 0.0)
    self._restart(step)

  def _restart(self, step: int) -> None:
    self.start_time, self.start_step = time.perf_counter(), step

  def flush(self, step: int, metrics: metrics_lib.StepMetrics, last_saved: int | None
            ) -> dict[str, float]:
    """Writes the metrics accumulated since the last flush (after the finiteness check)."""
    host = jax.device_get(metrics)
    _check_finite(host.nonfinite, last_saved)
    rate = ((step - self.start_step) * self.batch_size /
            max(time.perf_counter() - self.start_time, 1e-9))
    scalars = host.scalars()
    scalars.update(examples_per_second=rate, tokens_per_second=rate * self.tokens,
                   mfu=flops.mfu(rate, self.flops, self.peak))
    self.writer.write_scalars(step, scalars)
    self._restart(step)
    return scalars


def train(config: ml_collections.ConfigDict, workdir: str, dataset: Any = None, *,
          hooks: Sequence[Hook] = ()) -> state_lib.TrainState:
  """Trains the task of config.task; returns the final TrainState.

  Args:
    config: a whole config of a registered task (checked first).
    workdir: checkpoints (workdir/checkpoints), TensorBoard events; resumes from it.
    dataset: in-memory data for config.data.source == 'arrays' (its form is the task's).
    hooks: called as hook(step, scalars) after every step (e.g. a progress bar).
  """
  task = task_lib.make_task(config)
  train_cfg = config.train
  mesh = sharding.make_mesh(config.mesh)
  check_batch(config, mesh)
  rules = sharding.rules_from_config(config.sharding_rules)
  data_iter = task.input_iterator(dataset,
                                  _process_rows(config, mesh, _batch_shardings(task, mesh, rules)))
  num_steps = state_lib.total_steps(config, data_iter.num_examples)
  program = build_program(config, mesh, data_iter.num_examples, task)
  ckpt = checkpointing.TrainCheckpointer(workdir, train_cfg.keep_checkpoints,
                                         train_cfg.async_checkpointing)
  state, last_saved = _restore_or_init(program, ckpt, data_iter, config, workdir)
  step = int(jax.device_get(state.step))
  if step >= num_steps:
    logging.info("%s holds step %d of %d: nothing to train.", workdir, step, num_steps)
    ckpt.close()
    return state
  step_fn = program.compile()
  prepare = task.make_prepare(mesh, program.batch_shardings)
  sample_fn = task.sample_hook()
  reporter = _Reporter(config, task, workdir, step_fn, mesh, step, num_steps,
                       fresh=last_saved is None)
  config_dict = checkpointing.config_to_dict(config)
  metrics = program.empty_metrics()
  logging.info("Training %s steps %d -> %d, global batch %d, %d devices, %d processes.",
               config.task, step, num_steps, train_cfg.global_batch_size, jax.device_count(),
               jax.process_count())
  try:
    with _StopSignals() as stop_signals:
      while step < num_steps:
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = prepare(next(data_iter))
          state, metrics = step_fn(state, batch, metrics)
        step += 1
        reporter.progress(step)
        stop = stop_signals.received or (jax.process_count() > 1 and
                                         ckpt.reached_preemption(step))
        is_last = step == num_steps
        scalars = None
        if step % train_cfg.log_every_steps == 0 or is_last or stop:
          scalars = reporter.flush(step, metrics, last_saved)
          metrics = program.empty_metrics()
        save = step % train_cfg.checkpoint_every_steps == 0 or is_last or stop
        sample = sample_fn is not None and step % train_cfg.sample_every_steps == 0
        if (save or sample) and scalars is None:
          _check_finite(jax.device_get(metrics.nonfinite), last_saved)
        if save:
          ckpt.save(step, state, data_iter.get_state(), config_dict)
          last_saved = step
        if sample:
          reporter.writer.write_images(step, sample_fn(state, batch))
        for hook in hooks:
          hook(step, scalars)
        if stop:
          logging.warning("Stopped at step %d after a termination request.", step)
          break
  finally:
    # Also on errors (NaN, interrupts): finish the pending async save of the last good state.
    ckpt.close()
    reporter.writer.flush()
  return state
