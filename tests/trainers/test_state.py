"""The shared training state: schedule golden values, parameter groups, optimizer, EMAs, checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import c2i as c2i_configs
from configs import tokenizer as tokenizer_configs
from grn_jax.trainers import c2i
from grn_jax.trainers import state as state_lib


def _config(**train_overrides):
  config = c2i_configs.get_config("variant=tiny")
  config.train.update(train_overrides)
  return config


def test_learning_rate_schedule_golden_values():
  config = _config(global_batch_size=512, train_examples=5120, num_epochs=10)
  config.optim.update(blr=1e-4, warmup_epochs=2, schedule="constant")
  lr = state_lib.learning_rate_fn(config)  # peak 2e-4, 10 steps/epoch, warm-up 20 steps
  np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10, 20, 99)],
                             [0.0, 5e-5, 1e-4, 2e-4, 2e-4], rtol=1e-6)
  config.optim.update(schedule="cosine", min_lr=1e-5)
  lr = state_lib.learning_rate_fn(config)
  np.testing.assert_allclose(float(lr(20)), 2e-4, rtol=1e-6)
  np.testing.assert_allclose(float(lr(60)), 1e-5 + 1.9e-4 * 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(lr(100)), 1e-5, rtol=1e-5)
  # The epoch length follows the data set when one is given (20 steps per epoch here).
  lr = state_lib.learning_rate_fn(config, num_examples=10240)
  np.testing.assert_allclose(float(lr(20)), 1e-4, rtol=1e-6)
  config.optim.schedule = "linear"
  with pytest.raises(ValueError, match="config.optim.schedule"):
    state_lib.learning_rate_fn(config)
  # The T2I/T2V recipe: lr = blr whatever the batch, warm-up in steps.
  config.optim.update(schedule="constant", lr_scaling="none", warmup_epochs=0, warmup_steps=4,
                      blr=2e-5)
  lr = state_lib.learning_rate_fn(config)
  np.testing.assert_allclose([float(lr(s)) for s in (0, 2, 4, 50)], [0.0, 1e-5, 2e-5, 2e-5],
                             rtol=1e-6)


def test_t2iv_schedule_is_the_official_loops():
  """t2iv_train.py: ratio = wp0 + (1 - wp0) it / wp_it while it < wp_it, written into the
  optimizer only then, so every later step keeps the ratio of it = wp_it - 1 (0.99005)."""
  from configs import t2iv as t2iv_configs
  config = t2iv_configs.get_config("variant=2B,task=t2i")
  lr = state_lib.learning_rate_fn(config)
  official = lambda it: 2e-5 * (0.005 + 0.995 * min(it, 99) / 100)
  steps = (0, 1, 50, 99, 100, 101, 10_000)
  np.testing.assert_allclose([float(lr(s)) for s in steps], [official(s) for s in steps],
                             rtol=3e-5)   # float32
  np.testing.assert_allclose(float(lr(5000)), 2e-5 * 0.99005, rtol=1e-6)
  config.optim.schedule = "cosine"
  with pytest.raises(ValueError, match="warmup_hold_last"):
    state_lib.check_sections(config)
  config.optim.update(schedule="constant", warmup_init=1.0)
  with pytest.raises(ValueError, match="warmup_init"):
    state_lib.check_sections(config)


def test_run_length_from_epochs_or_total_steps():
  config = _config(global_batch_size=8, train_examples=100, num_epochs=3, total_steps=-1)
  assert state_lib.steps_per_epoch(config) == 12 and state_lib.total_steps(config) == 36
  assert state_lib.total_steps(config, num_examples=40) == 15
  config.train.total_steps = 7
  assert state_lib.total_steps(config) == 7
  with pytest.raises(ValueError, match="exceeds the 4 training examples"):
    state_lib.steps_per_epoch(config, num_examples=4)


def test_parameter_groups_are_data():
  params = {"pos_embed": jnp.ones((1, 4, 8)), "blk": {"kernel": jnp.ones((8, 8)),
                                                      "bias": jnp.ones((8,))},
            "norm": {"weight": jnp.ones((8,))}, "table": jnp.ones((3, 8))}
  assert state_lib.trainable_mask(params, c2i.PARAM_GROUPS.frozen) == {
      "pos_embed": False, "blk": {"kernel": True, "bias": True}, "norm": {"weight": True},
      "table": True}
  assert state_lib.weight_decay_mask(params, c2i.PARAM_GROUPS.no_decay) == {
      "pos_embed": True, "blk": {"kernel": True, "bias": False}, "norm": {"weight": False},
      "table": True}
  # Another family's groups: nothing frozen, `table` without decay.
  assert state_lib.weight_decay_mask(params, ("bias", "table"))["table"] is False
  assert all(jax.tree.leaves(state_lib.trainable_mask(params, ())))


def test_optimizer_masks_and_decoupled_decay():
  params = {"pos_embed": jnp.ones((1, 4, 8)), "blk": {"kernel": jnp.ones((8, 8)),
                                                      "bias": jnp.ones((8,))}}
  config = _config()
  config.optim.update(weight_decay=0.5, blr=1.0, warmup_epochs=0)
  tx = state_lib.make_optimizer(config, groups=c2i.PARAM_GROUPS)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  # Zero gradients: only decoupled weight decay moves decayed, trainable params.
  lr = 1.0 * 8 / 256
  np.testing.assert_allclose(updates["blk"]["kernel"], -lr * 0.5, rtol=1e-6)
  np.testing.assert_array_equal(updates["blk"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["pos_embed"], 0.0)
  assert isinstance(optax.tree.norm(updates), jax.Array)


def test_apply_gradients_clips_masks_and_updates_emas_exactly():
  params = {"pos_embed": jnp.full((2,), 5.0), "w": jnp.array([[1.0, 2.0], [3.0, 4.0]])}
  config = _config()
  config.optim.update(blr=256.0 / 8, warmup_epochs=0, b1=0.0, b2=0.0, eps=1e-12,
                      grad_clip_norm=1.0)  # lr 1; b1 = b2 = 0: Adam steps by sign(g)
  tx = state_lib.make_optimizer(config, groups=c2i.PARAM_GROUPS)
  state = state_lib.init_state(params, tx, num_emas=2)
  jax.tree.map(np.testing.assert_array_equal, state.ema_params[1], params)
  grads = {"pos_embed": jnp.full((2,), 100.0), "w": jnp.array([[3.0, -4.0], [0.0, 0.0]])}
  new, grad_norm = state_lib.apply_gradients(state, grads, tx, (0.5, 0.25), c2i.PARAM_GROUPS)
  assert int(new.step) == 1
  np.testing.assert_allclose(float(grad_norm), 5.0)  # frozen pos_embed leaves the norm
  np.testing.assert_array_equal(new.params["pos_embed"], params["pos_embed"])
  np.testing.assert_allclose(new.params["w"], [[0.0, 3.0], [3.0, 4.0]], atol=1e-6)
  for ema, decay in zip(new.ema_params, (0.5, 0.25)):
    np.testing.assert_allclose(ema["w"], decay * params["w"] + (1 - decay) * new.params["w"],
                               rtol=1e-6)


def test_section_checks_name_the_field():
  for config in (c2i_configs.get_config("variant=tiny"), tokenizer_configs.get_config()):
    state_lib.check_sections(config)
  config = _config(ema_decays=(0.9, 1.0))
  with pytest.raises(ValueError, match=r"config.train.ema_decays must be values in \[0, 1\)"):
    state_lib.check_sections(config)
  config = _config(checkpoint_every_steps=0)
  with pytest.raises(ValueError, match="config.train.checkpoint_every_steps must be >= 1"):
    state_lib.check_sections(config)
  config = _config()
  config.optim.blr = 0.0
  with pytest.raises(ValueError, match="config.optim.blr must be > 0"):
    state_lib.check_sections(config)
  config = _config()
  config.optim.warmup_iters = 10
  with pytest.raises(ValueError, match=r"config.optim: .*unknown fields \['warmup_iters'\]"):
    state_lib.check_sections(config)
  config = _config()
  config.optim.warmup_steps = 10  # and warmup_epochs 5
  with pytest.raises(ValueError, match="warmup_steps .* or in warmup_epochs .* not both"):
    state_lib.check_sections(config)
  config = _config()
  config.optim.lr_scaling = "sqrt"
  with pytest.raises(ValueError, match="config.optim.lr_scaling must be one of"):
    state_lib.check_sections(config)
