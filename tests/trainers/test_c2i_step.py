"""C2I train step: corruption statistics, schedule, optimizer masks, known values, sharding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.trainers import c2i as trainer
from grn_jax.trainers import c2i_step


def _config(**train_overrides):
  config = c2i_configs.get_config("variant=tiny")
  config.train.update(train_overrides)
  return config


def test_corrupt_statistics_match_the_official_recipe():
  labels = jnp.zeros((4096, 4, 4, 4), jnp.int32) + 3
  classes = jnp.arange(4096, dtype=jnp.int32) % 10
  inputs, keep_ratio, dropped = c2i_step.corrupt(
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


def test_learning_rate_schedule_golden_values():
  config = _config(global_batch_size=512, train_examples=5120, num_epochs=10)
  config.optim.update(blr=1e-4, warmup_epochs=2, schedule="constant")
  lr = c2i_step.learning_rate_fn(config)  # peak 2e-4, 10 steps/epoch, warm-up 20 steps
  np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10, 20, 99)],
                             [0.0, 5e-5, 1e-4, 2e-4, 2e-4], rtol=1e-6)
  config.optim.update(schedule="cosine", min_lr=1e-5)
  lr = c2i_step.learning_rate_fn(config)
  np.testing.assert_allclose(float(lr(20)), 2e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(60)), 1e-5 + 1.9e-4 * 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(100)), 1e-5, rtol=1e-5)
  config.optim.schedule = "linear"
  with pytest.raises(ValueError, match="config.optim.schedule"):
    c2i_step.learning_rate_fn(config)


def test_bins_and_cross_entropy_values():
  np.testing.assert_array_equal(
      c2i_step.keep_ratio_bins(jnp.array([0.0, 0.099, 0.1, 0.55, 0.999, 1.0])),
      [0, 0, 1, 5, 9, 9])
  logits = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  np.testing.assert_allclose(c2i_step.cross_entropy(logits, jnp.array([1])), [math.log(4)],
                             rtol=1e-6)


def _state_and_batch(config, mesh):
  state, shardings, model, tx, lr_fn = trainer.create_train_state(config, mesh, 256)
  step = trainer.make_train_step(config, mesh, model, tx, lr_fn, shardings)
  rng = np.random.default_rng(0)
  batch = {"labels": rng.integers(0, 16, (8, 4, 4, 4), dtype=np.int32),
           "class_labels": rng.integers(0, 10, 8, dtype=np.int32)}
  return state, step, sharding.shard_host_batch(batch, mesh)


def test_step_values_and_sharded_equals_single_device():
  config = _config()
  config.optim.update(weight_decay=0.05)  # exercise the decay mask too
  single = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  state1, step1, batch1 = _state_and_batch(config, single)
  p0 = jax.tree.map(np.asarray, state1.params)
  config8 = _config()
  config8.optim.update(weight_decay=0.05)
  config8.mesh.update(data=2, fsdp=2, tensor=2)
  mesh8 = sharding.make_mesh(config8.mesh)
  state8, step8, batch8 = _state_and_batch(config8, mesh8)
  emas0 = jax.tree.map(np.array, state1.ema_params)
  jax.tree.map(np.testing.assert_array_equal, emas0[0], p0)  # EMAs start as copies
  for _ in range(3):
    state1, m1 = step1(state1, batch1)
    if int(state1.step) == 1:  # ema <- d * ema + (1 - d) * new params, exactly
      for ema, ema0, decay in zip(state1.ema_params, emas0, config.train.ema_decays):
        want = jax.tree.map(lambda e, p, d=decay: np.float32(d) * e + np.float32(1 - d) * p,
                            ema0, jax.tree.map(np.asarray, state1.params))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6,
                                                             atol=1e-9), ema, want)
    state8, m8 = step8(state8, batch8)
    # Zero-initialised output layer: the first loss is exactly log(16).
    if int(state1.step) == 1:
      np.testing.assert_allclose(float(m1["loss"]), math.log(16), rtol=1e-6)
      assert float(m1["lr"]) == 0.0  # warm-up starts at 0
    np.testing.assert_allclose(float(m1["loss"]), float(m8["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m8["grad_norm"]), rtol=1e-5)
  assert any(np.abs(np.asarray(a) - b).max() > 0
             for a, b in zip(jax.tree.leaves(state1.params), jax.tree.leaves(p0)))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5,
                                                       atol=2e-6),
               (state1.params, state1.ema_params), (state8.params, state8.ema_params))
  assert state8.params["pos_embed"].sharding.mesh.size == 8
  # The fixed sin-cos table never moves; per-decile counts add up to the batch.
  np.testing.assert_array_equal(np.asarray(state1.params["pos_embed"]), p0["pos_embed"])
  assert float(np.sum(m1["bin_count"])) == 8.0


def test_optimizer_masks():
  params = {"pos_embed": jnp.ones((1, 4, 8)), "blk": {"kernel": jnp.ones((8, 8)),
                                                      "bias": jnp.ones((8,))},
            "norm": {"weight": jnp.ones((8,))}}
  assert c2i_step.trainable_mask(params) == {"pos_embed": False, "blk": {"kernel": True,
                                             "bias": True}, "norm": {"weight": True}}
  assert c2i_step.weight_decay_mask(params) == {"pos_embed": True, "blk": {"kernel": True,
                                                "bias": False}, "norm": {"weight": False}}
  config = _config()
  config.optim.update(weight_decay=0.5, blr=1.0, warmup_epochs=0)
  tx = c2i_step.make_optimizer(config)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradients: only decoupled weight decay moves decayed, trainable params.
  lr = 1.0 * 8 / 256
  np.testing.assert_allclose(updates["blk"]["kernel"], -lr * 0.5, rtol=1e-6)
  np.testing.assert_array_equal(updates["blk"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["pos_embed"], 0.0)
  assert isinstance(optax.tree.norm(updates), jax.Array)
