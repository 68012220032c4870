"""The C2I task: corruption statistics, known values, metrics, 1 device == 8 devices."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.trainers import c2i
from grn_jax.trainers import loop


def _config(**train_overrides):
  config = c2i_configs.get_config("variant=tiny")
  config.train.update(train_overrides)
  return config


def test_corrupt_statistics_match_the_official_recipe():
  labels = jnp.zeros((4096, 4, 4, 4), jnp.int32) + 3
  classes = jnp.arange(4096, dtype=jnp.int32) % 10
  inputs, keep_ratio, dropped = c2i.corrupt(
      jax.random.key(0), labels, classes, num_label_classes=16, num_classes=10, p_mean=-0.8,
      p_std=0.8, label_drop_prob=0.1)
  # keep ratio is logit-normal: logit(t) ~ N(-0.8, 0.8).
  logit = np.log(np.asarray(keep_ratio)) - np.log1p(-np.asarray(keep_ratio))
  assert abs(logit.mean() + 0.8) < 0.05 and abs(logit.std() - 0.8) < 0.05
  # An element equals the clean label if kept (prob t) or by chance (prob (1 - t) / 16).
  same = np.asarray(inputs == 3).mean(axis=(1, 2, 3))
  expected = np.asarray(keep_ratio) + (1 - np.asarray(keep_ratio)) / 16
  assert abs((same - expected).mean()) < 0.01
  assert np.asarray(inputs).min() >= 0 and np.asarray(inputs).max() < 16
  drop = np.asarray(dropped) == 10
  assert abs(drop.mean() - 0.1) < 0.02
  np.testing.assert_array_equal(np.asarray(dropped)[~drop], np.asarray(classes)[~drop])


def _program(config, mesh):
  program = loop.build_program(config, mesh, 256)
  rng = np.random.default_rng(0)
  batch = {"labels": rng.integers(0, 16, (8, 4, 4, 4), dtype=np.int32),
           "class_labels": rng.integers(0, 10, 8, dtype=np.int32)}
  device_batch = program.task.make_prepare(mesh, program.batch_shardings)(batch)
  return program, program.compile(), program.init(), device_batch


def _step(program, compiled, state, batch):
  """One step from empty metrics: (state, that step's scalars, its raw metrics on the host)."""
  state, metrics = compiled(state, batch, program.empty_metrics())
  host = jax.device_get(metrics)
  return state, host.scalars(), host


def test_step_values_and_sharded_equals_single_device():
  config = _config()
  config.optim.update(weight_decay=0.05)  # exercise the decay mask too
  single = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  program1, step1, state1, batch1 = _program(config, single)
  p0 = jax.tree.map(np.asarray, state1.params)
  config8 = _config()
  config8.optim.update(weight_decay=0.05)
  config8.mesh.update(data=2, fsdp=2, tensor=2)
  mesh8 = sharding.make_mesh(config8.mesh)
  program8, step8, state8, batch8 = _program(config8, mesh8)
  emas0 = jax.tree.map(np.array, state1.ema_params)
  jax.tree.map(np.testing.assert_array_equal, emas0[0], p0)  # EMAs start as copies
  for _ in range(3):
    state1, m1, host1 = _step(program1, step1, state1, batch1)
    if int(state1.step) == 1:  # ema <- d * ema + (1 - d) * new params, exactly
      for ema, ema0, decay in zip(state1.ema_params, emas0, config.train.ema_decays):
        want = jax.tree.map(lambda e, p, d=decay: np.float32(d) * e + np.float32(1 - d) * p,
                            ema0, jax.tree.map(np.asarray, state1.params))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6,
                                                             atol=1e-9), ema, want)
    state8, m8, _ = _step(program8, step8, state8, batch8)
    # Zero-initialised output layer: the first loss is exactly log(16).
    if int(state1.step) == 1:
      np.testing.assert_allclose(m1["loss"], math.log(16), rtol=1e-5)  # float32 mean
      assert m1["lr"] == 0.0  # warm-up starts at 0
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-6)
    np.testing.assert_allclose(m1["grad_norm"], m8["grad_norm"], rtol=1e-5)
    np.testing.assert_allclose(m1["accuracy"], m8["accuracy"], rtol=1e-6)
  assert any(np.abs(np.asarray(a) - b).max() > 0
             for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(p0)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5,
                                                       atol=2e-6),
               (state1.params, state1.ema_params), (state8.params, state8.ema_params))
  assert state8.params["pos_embed"].sharding.mesh.size == 8
  # The fixed sin-cos table never moves; per-decile counts add up to the batch.
  np.testing.assert_array_equal(np.asarray(state1.params["pos_embed"]), p0["pos_embed"])
  assert float(np.sum(host1.task.accuracy_by_keep.count)) == 8.0
  assert int(host1.loop.loss.count) == 1 and host1.nonfinite.compute() is None


def test_one_step_on_synthetic_labels_matches_the_loss_by_hand():
  config = _config()
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  task = c2i.C2ITask(config)
  it = task.input_iterator(None, (0, 8))
  program = loop.build_program(config, mesh, it.num_examples, task)
  local = next(it)
  assert local["labels"].shape == (8, 4, 4, 4) and local["class_labels"].shape == (8,)
  batch = task.make_prepare(mesh, program.batch_shardings)(local)
  state = program.init()
  with nn.logical_axis_rules(sharding.rules_from_config(config.sharding_rules)):
    want, outputs = jax.jit(task.loss)(state.params, batch,
                                       jax.random.fold_in(jax.random.key(config.seed), 0))
  _, scalars, _ = _step(program, program.compile(), state, batch)
  np.testing.assert_allclose(scalars["loss"], float(want), rtol=1e-6)
  np.testing.assert_allclose(scalars["accuracy"], float(outputs["accuracy"]), rtol=1e-6)


def test_eval_needs_a_balanced_sample_count():
  config = c2i_configs.get_config("variant=tiny")
  assert c2i.C2ITask(config).eval_hook(mesh=None) is None
  config.train.eval_every_steps = 5
  config.eval.num_samples = 15
  with pytest.raises(ValueError, match="num_samples=15 must be a positive multiple of the 10"):
    c2i.C2ITask(config).eval_hook(mesh=None)
