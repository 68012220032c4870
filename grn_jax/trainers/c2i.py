"""Class-to-image GRN training loop: one CPU to a TPU pod with the same code.

  python -m grn_jax.main --mode=train --config=configs/c2i.py:variant=B --workdir=DIR

`train_and_evaluate(config, workdir, dataset=None)`:
  * mesh ('data', 'fsdp', 'tensor') from config.mesh; the train state is created sharded by the
    logical axis rules and the step is one jit with in/out shardings and a donated state;
  * input from `grn_jax.data.pipeline` (each process loads its rows of every global batch and
    `make_array_from_process_local_data` builds the global arrays); image sources are tokenized
    on the fly by the frozen HBQ tokenizer;
  * Orbax checkpoints (state, both EMAs, data iterator, config), async, keep the latest N,
    automatic resume, save on SIGTERM; a non-finite loss or gradient stops the run and keeps
    the last good checkpoint; `config.train.init_from` starts from a converted params directory;
  * clu metric writers (TensorBoard), progress line with rate and ETA, optional sample grids.

In-memory data (e.g. the digits demo): config.data.source = 'arrays' and
`dataset=(labels int32 [N, h, w, D], class_labels int32 [N])`; the epoch is then N examples.
"""

import signal
import threading
import time
from typing import Sequence

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from grn_jax import checkpointing
from grn_jax import config_check
from grn_jax import evaluation
from grn_jax import flops
from grn_jax import sharding
from grn_jax.data import online_tokenizer
from grn_jax.data import pipeline
from grn_jax.models import build_c2i
from grn_jax.models import tokenizer as tokenizer_model
from grn_jax.models import validate_model_config
from grn_jax.sampling import api as sampling_api
from grn_jax.trainers import c2i_step

CONFIG_FIELDS = ("task", "mode", "seed", "model", "tokenizer", "data", "train", "optim",
                 "corruption", "sample", "eval", "mesh", "sharding_rules")
TRAIN_FIELDS = ("global_batch_size", "num_epochs", "total_steps", "train_examples", "ema_decays",
                "log_every_steps", "checkpoint_every_steps", "keep_checkpoints",
                "async_checkpointing", "init_from", "sample_every_steps", "peak_flops_per_device")
OPTIM_FIELDS = ("blr", "b1", "b2", "weight_decay", "grad_clip_norm", "schedule", "warmup_epochs",
                "min_lr", "eps")
CORRUPTION_FIELDS = ("keep_logit_mean", "keep_logit_std", "label_drop_prob")


class NonFiniteLossError(FloatingPointError):
  """Raised when the loss or gradient norm is NaN or inf."""


def check_sections(config: ml_collections.ConfigDict) -> None:
  """The fields of config.train, config.optim and config.corruption (errors name the field)."""
  config_check.check_fields(config.train, "train", TRAIN_FIELDS)
  config_check.check_fields(config.optim, "optim", OPTIM_FIELDS)
  config_check.check_fields(config.corruption, "corruption", CORRUPTION_FIELDS)


def validate_config(config: ml_collections.ConfigDict, extra_sections: Sequence[str] = ()) -> None:
  """A whole C2I config: its top-level fields and every section's (errors name the field).

  Args:
    config: a configs/c2i.py-style config (task 'c2i').
    extra_sections: top-level sections a config may add (the demo's), checked by their readers.
  """
  config_check.check_fields(config, "", CONFIG_FIELDS, optional=extra_sections)
  if config.task != "c2i":
    raise ValueError(f"config.task={config.task!r}: this is the check of a C2I config (task "
                     "'c2i').")
  validate_model_config(config.model)
  tokenizer_model.validate_tokenizer_config(config.tokenizer)
  config_check.check_fields(config.data, "data", pipeline.DATA_FIELDS)
  check_sections(config)
  config_check.check_fields(config.sample, "sample", sampling_api.SAMPLE_FIELDS)
  config_check.check_fields(config.eval, "eval", evaluation.EVAL_FIELDS)
  config_check.check_fields(config.mesh, "mesh", sharding.MESH_AXES)
  sharding.rules_from_config(config.sharding_rules)


def validate_train_config(config: ml_collections.ConfigDict, num_batch_shards: int) -> None:
  """Fails at start-up, naming the field."""
  check_sections(config)
  train, corruption = config.train, config.corruption
  if train.global_batch_size % num_batch_shards:
    raise ValueError(f"config.train.global_batch_size={train.global_batch_size} must be "
                     f"divisible by the data x fsdp mesh size {num_batch_shards}.")
  if train.global_batch_size % jax.process_count():
    raise ValueError(f"config.train.global_batch_size={train.global_batch_size} must be "
                     f"divisible by the {jax.process_count()} processes.")
  decays = tuple(train.ema_decays)
  if not decays or any(not 0.0 <= d < 1.0 for d in decays):
    raise ValueError(f"config.train.ema_decays must be a non-empty tuple of values in [0, 1), "
                     f"got {decays}.")
  if not 0.0 <= corruption.label_drop_prob <= 1.0:
    raise ValueError(f"config.corruption.label_drop_prob must lie in [0, 1], got "
                     f"{corruption.label_drop_prob}.")
  if corruption.keep_logit_std < 0:
    raise ValueError(f"config.corruption.keep_logit_std must be >= 0, got "
                     f"{corruption.keep_logit_std}.")
  if not config.optim.blr > 0:
    raise ValueError(f"config.optim.blr must be > 0, got {config.optim.blr}.")
  for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    if train[field] < 1:
      raise ValueError(f"config.train.{field} must be >= 1, got {train[field]}.")
  params_name = config.sample.params
  if params_name != "params" and not (params_name.startswith("ema_") and
                                      params_name[4:].isdigit() and
                                      int(params_name[4:]) < len(decays)):
    raise ValueError(f"config.sample.params must be 'params' or ema_0..ema_{len(decays) - 1}, "
                     f"got {params_name!r}.")


def sample_grid_hook(config: ml_collections.ConfigDict):
  """grn_jax.sampling.sample_grid_fn when config.train.sample_every_steps > 0, else None."""
  return sampling_api.sample_grid_fn if config.train.sample_every_steps > 0 else None


def sampling_params(state: c2i_step.TrainState, name: str):
  """'params' or 'ema_i' -> that parameter tree."""
  return state.params if name == "params" else state.ema_params[int(name[4:])]


def total_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
  if config.train.total_steps > 0:
    return int(config.train.total_steps)
  return int(config.train.num_epochs * c2i_step.steps_per_epoch(config, num_examples))


def model_inputs(config: ml_collections.ConfigDict, batch: int):
  """Zero model inputs of a given batch (for init and abstract compilation)."""
  h, w, d = pipeline.label_shape(config.model)
  return (jnp.zeros((batch, h, w, d), jnp.int32), jnp.zeros((batch,), jnp.float32),
          jnp.zeros((batch,), jnp.int32))


def create_train_state(config: ml_collections.ConfigDict, mesh, num_examples: int,
                       abstract_only: bool = False):
  """The sharded TrainState (or only its abstract form) and what the step needs.

  Returns:
    (state or abstract state, state shardings, model, tx, lr_fn).
  """
  model = build_c2i(config.model)
  rules = sharding.rules_from_config(config.sharding_rules)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  inputs = model_inputs(config, shards)
  lr_fn = c2i_step.learning_rate_fn(config, num_examples)
  tx = c2i_step.make_optimizer(config, num_examples)
  num_emas = len(config.train.ema_decays)

  def init(key):
    params = model.init(key, *inputs)["params"]
    return c2i_step.init_state(params, tx, num_emas)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(init, jax.random.key(config.seed))
  unboxed = nn.unbox(boxed)
  # Logical specs give the empty optax.MaskedNode (frozen-param slots) a sharding; put the
  # node back so that the sharding tree has the state's structure.
  is_masked = lambda x: isinstance(x, optax.MaskedNode)
  state_shardings = jax.tree.map(lambda x, s: x if is_masked(x) else s, unboxed,
                                 sharding.logical_shardings(boxed, mesh, rules),
                                 is_leaf=is_masked)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          unboxed, state_shardings)
  if abstract_only:
    return abstract, state_shardings, model, tx, lr_fn
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    state = jax.jit(lambda k: nn.unbox(init(k)), out_shardings=state_shardings)(
        jax.random.key(config.seed))
  return state, state_shardings, model, tx, lr_fn


def make_train_step(config: ml_collections.ConfigDict, mesh, model, tx, lr_fn, state_shardings):
  """jit(step, in/out shardings, donate state). (state, batch) -> (state, metrics)."""
  rules = sharding.rules_from_config(config.sharding_rules)
  base_key = jax.random.key(config.seed)

  def apply_fn(params, labels, keep_ratio, class_labels):
    return model.apply({"params": params}, labels, keep_ratio, class_labels)

  def step(state, batch):
    with nn.logical_axis_rules(rules):
      return c2i_step.train_step(state, batch, apply_fn=apply_fn, tx=tx, lr_fn=lr_fn,
                                 config=config, base_key=base_key)

  batch_shardings = {"labels": sharding.batch_sharding(mesh, 4),
                     "class_labels": sharding.batch_sharding(mesh, 1)}
  jitted = jax.jit(step, in_shardings=(state_shardings, batch_shardings),
                   out_shardings=(state_shardings, sharding.replicated(mesh)),
                   donate_argnums=0)

  def run(state, batch):
    with jax.set_mesh(mesh):
      return jitted(state, batch)

  run.jitted = jitted
  run.batch_shardings = batch_shardings
  return run


class _MetricAccumulator:
  """Host-side sums of per-step metrics between log steps."""

  def __init__(self):
    self.reset()

  def reset(self):
    self.steps, self.sums, self.last_lr = 0, {}, 0.0
    self.bin_correct = np.zeros(c2i_step.NUM_KEEP_BINS)
    self.bin_count = np.zeros(c2i_step.NUM_KEEP_BINS)

  def add(self, metrics: dict[str, np.ndarray]):
    self.steps += 1
    for name in ("loss", "accuracy", "grad_norm"):
      self.sums[name] = self.sums.get(name, 0.0) + float(metrics[name])
    self.last_lr = float(metrics["lr"])
    self.bin_correct += metrics["bin_correct"]
    self.bin_count += metrics["bin_count"]

  def summary(self) -> dict[str, float]:
    out = {k: v / max(self.steps, 1) for k, v in self.sums.items()}
    out["lr"] = self.last_lr
    for i in range(c2i_step.NUM_KEEP_BINS):
      if self.bin_count[i] > 0:
        out[f"accuracy/keep_{i / 10:.1f}_{(i + 1) / 10:.1f}"] = (
            self.bin_correct[i] / self.bin_count[i])
    return out


def _check_finite(metrics: dict[str, np.ndarray], step: int, last_saved: int | None):
  loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
  if not (np.isfinite(loss) and np.isfinite(grad_norm)):
    raise NonFiniteLossError(
        f"loss {loss} / grad norm {grad_norm} at step {step} is not finite; stopping. The last "
        f"good checkpoint (step {last_saved}) is kept in the workdir. Lower config.optim.blr, "
        "check config.optim.grad_clip_norm or use float32 compute (config.model.dtype).")


class _SigtermFlag:
  """Sets `.set` on SIGTERM (main thread only); restores the old handler on exit."""

  def __init__(self):
    self.set, self._old = False, None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.set = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dataset: tuple[np.ndarray, np.ndarray] | None = None
                       ) -> c2i_step.TrainState:
  """Trains GRN C2I; returns the final TrainState (checkpointed in workdir/checkpoints)."""
  mesh = sharding.make_mesh(config.mesh)
  validate_train_config(config, mesh.shape["data"] * mesh.shape["fsdp"])
  train = config.train
  rows = pipeline.process_rows(train.global_batch_size, sharding.batch_sharding(mesh, 1))
  data_iter = pipeline.build_train_iterator(config, dataset, rows)
  num_examples = data_iter.num_examples
  num_steps = total_train_steps(config, num_examples)
  sample_fn = sample_grid_hook(config)
  encoder = (online_tokenizer.make_label_encoder(config, mesh)
             if data_iter.needs_tokenizer else None)

  ckpt = checkpointing.TrainCheckpointer(workdir, train.keep_checkpoints,
                                         train.async_checkpointing)
  abstract, state_shardings, model, tx, lr_fn = create_train_state(
      config, mesh, num_examples, abstract_only=True)
  latest = ckpt.latest_step()
  if latest is not None:
    logging.info("Resuming from %s/checkpoints/%d.", workdir, latest)
    state, data_state = ckpt.restore(latest, abstract)
    data_iter.set_state(data_state)
  else:
    state = create_train_state(config, mesh, num_examples)[0]
    if train.init_from:
      logging.info("Initialising params (and EMAs) from %s.", train.init_from)
      params = checkpointing.restore_params(train.init_from, abstract.params)
      state = state.replace(params=params, ema_params=tuple(
          jax.tree.map(jnp.copy, params) for _ in train.ema_decays))
  step_fn = make_train_step(config, mesh, model, tx, lr_fn, state_shardings)

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  if latest is None:
    writer.write_hparams({k: v for k, v in checkpointing.config_to_dict(config).items()
                          if isinstance(v, (int, float, str, bool))})
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=train.log_every_steps, every_secs=None)
  total_peak = flops.run_peak_flops(train.peak_flops_per_device, config.model.dtype)
  flops_per_example = flops.c2i_train_flops_per_example(config.model)
  tokens_per_example = config.model.input_size**2
  config_dict = checkpointing.config_to_dict(config)
  start_step = int(jax.device_get(state.step))
  last_saved = latest
  acc = _MetricAccumulator()
  log_start, log_start_step = time.perf_counter(), start_step
  pending = None  # (step, device metrics) of the previous step, checked one step late

  def host(step_metrics):
    return jax.tree.map(np.asarray, jax.device_get(step_metrics))

  logging.info("Training steps %d -> %d, global batch %d, %d devices, %d processes.",
               start_step, num_steps, train.global_batch_size, jax.device_count(),
               jax.process_count())
  try:
    with _SigtermFlag() as sigterm:
      step = start_step
      while step < num_steps:
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          local = next(data_iter)
          if encoder is not None:
            images = sharding.shard_host_batch(local["image"], mesh)
            labels = encoder(images)
            batch = {"labels": labels,
                     "class_labels": sharding.shard_host_batch(local["class_labels"], mesh)}
          else:
            batch = sharding.shard_host_batch(local, mesh)
          state, metrics = step_fn(state, batch)
        step += 1
        if pending is not None:
          m = host(pending[1])
          _check_finite(m, pending[0], last_saved)
          acc.add(m)
        pending = (step, metrics)
        report(step)

        stop = sigterm.set or (jax.process_count() > 1 and ckpt.reached_preemption(step))
        is_last = step == num_steps
        if step % train.log_every_steps == 0 or is_last or stop:
          m = host(pending[1])
          _check_finite(m, step, last_saved)
          acc.add(m)
          pending = None
          elapsed = time.perf_counter() - log_start
          rate = (step - log_start_step) * train.global_batch_size / max(elapsed, 1e-9)
          summary = acc.summary()
          summary.update({"examples_per_second": rate,
                          "tokens_per_second": rate * tokens_per_example,
                          "mfu": flops.mfu(rate, flops_per_example, total_peak)})
          writer.write_scalars(step, summary)
          acc.reset()
          log_start, log_start_step = time.perf_counter(), step
        if step % train.checkpoint_every_steps == 0 or is_last or stop:
          if pending is not None:
            m = host(pending[1])
            _check_finite(m, step, last_saved)
            acc.add(m)
            pending = None
          ckpt.save(step, state, data_iter.get_state(), config_dict)
          last_saved = step
        if sample_fn is not None and step % train.sample_every_steps == 0:
          grid = sample_fn(config, sampling_params(state, config.sample.params))
          writer.write_images(step, {"samples": np.asarray(grid)})
        if stop:
          logging.warning("Stopped at step %d after a termination request.", step)
          break
  finally:
    # Also on errors (NaN, interrupts): finish the pending async save of the last good state.
    ckpt.close()
    writer.flush()
  return state
