"""The tokenizer task: straight-through HBQ, the loss of one step, exact resume, config checks."""

import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo as demo_configs
from configs import tokenizer as tokenizer_configs
from grn_jax import checkpointing
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.demo import train as demo_train
from grn_jax.trainers import loop
from grn_jax.trainers import tokenizer as tokenizer_task


def _config(total_steps, **train_overrides):
  config = tokenizer_configs.get_config("variant=tiny")
  config.mesh.update(data=2)   # two of the 8 fake devices: sharded, and quick to compile
  config.train.update(dict(total_steps=total_steps, peak_flops_per_device=1e11,
                           **train_overrides))
  return config


def _images(n=64, size=32):  # 64: the synthetic source's size, the same step program
  """Pseudo images float32 [n, size, size, 3] in [-1, 1]: smooth ramps with random phases."""
  rng = np.random.default_rng(0)
  grid = np.linspace(0, 2 * np.pi, size, dtype=np.float32)
  phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 3)).astype(np.float32)
  return np.sin(grid[None, :, None, None] + grid[None, None, :, None] + phase).astype(np.float32)


def test_hbq_straight_through_quantises_forward_and_passes_gradients():
  x = jnp.asarray([-0.99, -0.3, 0.01, 0.5, 0.97])
  y = tokenizer_task.hbq_straight_through(x, 4)  # 16 bin centres -1 + (2l + 1) / 16
  np.testing.assert_allclose(y, [-0.9375, -0.3125, 0.0625, 0.4375, 0.9375], atol=1e-6)
  grad = jax.grad(lambda v: jnp.sum(tokenizer_task.hbq_straight_through(v, 4) * 3.0))(x)
  np.testing.assert_allclose(grad, 3.0)


def test_one_step_on_synthetic_images_reports_the_task_loss():
  config = _config(1)
  mesh = sharding.make_mesh(config.mesh)
  task = tokenizer_task.TokenizerTask(config)
  it = task.input_iterator(None, (0, 8))
  local = next(it)
  assert local["image"].dtype == np.uint8 and local["image"].shape == (8, 32, 32, 3)
  program = loop.build_program(config, mesh, it.num_examples, task)
  batch = task.make_prepare(mesh, program.batch_shardings)(local)
  np.testing.assert_allclose(np.asarray(batch["images"]),  # 1 ulp: XLA's u * (1 / 127.5)
                             np.asarray(tokenizer_io.from_uint8(local["image"])), atol=2e-7)
  state = program.init()
  before = jax.device_get(state.params)
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  with nn.logical_axis_rules(sharding.rules_from_config(config.sharding_rules)):
    want, outputs = jax.jit(task.loss)(state.params, batch, key)
  # l1_weight = l2_weight = 1; a random tokenizer reconstructs badly.
  np.testing.assert_allclose(float(want), float(outputs["l1"] + outputs["l2"]), rtol=1e-6)
  assert 0.05 < float(outputs["l1"]) < 2 and float(outputs["l2"]) > 0
  new_state, metrics = program.compile()(state, batch, program.empty_metrics())
  scalars = jax.device_get(metrics).scalars()
  np.testing.assert_allclose(scalars["loss"], float(want), rtol=1e-5)
  np.testing.assert_allclose(scalars["l2"], float(outputs["l2"]), rtol=1e-5)
  assert int(new_state.step) == 1 and new_state.ema_params == ()
  assert any(np.abs(np.asarray(a) - b).max() > 0
             for a, b in zip(jax.tree.leaves(new_state.params), jax.tree.leaves(before)))


def test_sigterm_and_resume_reproduce_the_uninterrupted_run(tmp_path):
  images = _images()
  config = _config(5, log_every_steps=2)
  config.data.source = "arrays"
  straight = loop.train(config, str(tmp_path / "straight"), dataset=images)

  def sigterm_at_2(step, scalars):
    del scalars
    if step == 2:
      os.kill(os.getpid(), signal.SIGTERM)

  workdir = str(tmp_path / "interrupted")
  stopped = loop.train(config, workdir, dataset=images, hooks=[sigterm_at_2])
  assert int(stopped.step) == 3
  assert checkpointing.TrainCheckpointer(workdir).latest_step() == 3
  resumed = loop.train(config, workdir, dataset=images)
  assert int(resumed.step) == 5
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               (resumed.params, resumed.opt_state), (straight.params, straight.opt_state))
  step, saved = checkpointing.load_train_arrays(workdir)
  assert step == 5 and set(saved) == {"step", "params", "opt_state", "ema_params"}


def test_tokenizer_config_is_validated(tmp_path):
  config = tokenizer_configs.get_config("variant=tiny")
  tokenizer_task.validate_config(config)
  config.reconstruction.quantize_prob = 1.5
  with pytest.raises(ValueError, match="config.reconstruction.quantize_prob"):
    tokenizer_task.validate_config(config)
  config = tokenizer_configs.get_config("variant=tiny")
  config.data.source = "label_shards"
  with pytest.raises(ValueError, match="config.data.source must be one of"):
    tokenizer_task.validate_config(config)
  config = tokenizer_configs.get_config("variant=tiny")
  config.model = {"hbq_rounds": 4}
  with pytest.raises(ValueError, match=r"config: .*unknown fields \['model'\]"):
    tokenizer_task.validate_config(config)
  config = demo_configs.get_config("size=test")
  demo_train.validate_tokenizer_sections(config)
  config.tokenizer_train.reconstruction.l1_weight = -1.0
  with pytest.raises(ValueError, match=r"config.tokenizer_train .*l1_weight"):
    demo_train.validate_tokenizer_sections(config)
  config = _config(1)
  config.data.source = "arrays"
  with pytest.raises(ValueError, match=r"images \[N, 32, 32, 3\] \(config.data.image_size=32\)"):
    loop.train(config, str(tmp_path / "run"), dataset=_images()[:, :16])
  with pytest.raises(ValueError, match=r"float dataset images must lie in \[-1, 1\]"):
    loop.train(config, str(tmp_path / "run"), dataset=_images() * 2)
  assert not (tmp_path / "run").exists()


def test_no_training_time_evaluation():
  config = tokenizer_configs.get_config("variant=tiny")
  assert tokenizer_task.TokenizerTask(config).eval_hook(mesh=None) is None
  config.train.eval_every_steps = 10
  with pytest.raises(ValueError, match="eval_every_steps > 0: the tokenizer task has no"):
    tokenizer_task.TokenizerTask(config).eval_hook(mesh=None)


def test_clips_train_the_video_tokenizer_with_the_same_loss(tmp_path):
  """num_frames=5: clips [N, 5, S, S, 3] in memory, latents [B, 2, h, w, d] (causal, 1 + 4)."""
  config = _config(2, global_batch_size=4, train_examples=8)
  config.data.update(source="arrays", image_size=16)
  config.reconstruction.num_frames = 5
  tokenizer_task.validate_config(config)
  clips = np.stack([np.roll(_images(8, 16), shift, axis=2) for shift in range(5)], axis=1)
  task = tokenizer_task.TokenizerTask(config)
  assert task.tokens_per_example == 2 and task.batch_spec()["images"][0].shape == (4, 5, 16, 16, 3)
  with pytest.raises(ValueError, match=r"videos \[N, 5, 16, 16, 3\] .*num_frames=5"):
    task.input_iterator(clips[:, :3], (0, 4))
  state = loop.train(config, str(tmp_path / "run"), dataset=clips)
  assert int(state.step) == 2
  # The loss of a clip batch with every example through HBQ (quantize_prob 1), by hand.
  recon = config.reconstruction.copy_and_resolve_references()
  recon.quantize_prob = 1.0

  def both(params, batch):
    loss, out = tokenizer_task.reconstruction_loss(params, batch, jax.random.key(0),
                                                   module=task.module, recon=recon)
    latents = task.module.apply({"params": params}, batch, method="encode")
    z = tokenizer_task.hbq_straight_through(latents, 4)
    err = task.module.apply({"params": params}, z, method="decode") - batch
    return latents, loss, out["l1"], jnp.mean(jnp.abs(err)) + jnp.mean(err**2), err

  latents, loss, l1, want, err = jax.jit(both)(state.params, clips[:2])
  assert latents.shape == (2, 2, 1, 1, 4) and err.shape == (2, 5, 16, 16, 3)
  np.testing.assert_allclose(float(l1), float(jnp.mean(jnp.abs(err))), rtol=1e-5)
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-5)


def test_clip_frames_are_checked():
  config = tokenizer_configs.get_config("variant=tiny")
  config.reconstruction.num_frames = 4
  with pytest.raises(ValueError, match=r"num_frames must be 1 \(images\) or 1 \+ 4 k"):
    tokenizer_task.validate_config(config)
  config.reconstruction.num_frames = 5
  with pytest.raises(ValueError, match="clips in memory: set config.data.source='arrays'"):
    tokenizer_task.validate_config(config)
