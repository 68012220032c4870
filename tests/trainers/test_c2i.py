"""train_and_evaluate: exact resume after SIGTERM, NaN stop, init_from, in-memory data."""

import os
import signal

import jax
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import checkpointing
from grn_jax.data import pipeline
from grn_jax.trainers import c2i as trainer
from grn_jax.trainers import c2i_step


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """The runs below compile identical programs; a persistent cache compiles them once."""
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield
  jax.config.update("jax_compilation_cache_dir", None)


def _config(total_steps, **train_overrides):
  config = c2i_configs.get_config("variant=tiny")
  fields = dict(total_steps=total_steps, peak_flops_per_device=1e11, log_every_steps=2,
                checkpoint_every_steps=3)
  config.train.update({**fields, **train_overrides})
  return config


def _assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_sigterm_and_resume_reproduce_the_uninterrupted_run(tmp_path, monkeypatch):
  straight = trainer.train_and_evaluate(_config(8), str(tmp_path / "straight"))
  assert int(straight.step) == 8

  # Second run: SIGTERM arrives while the 6th batch is being read (not a checkpoint step).
  real_build = pipeline.build_train_iterator

  def build_with_sigterm(*args, **kwargs):
    it = real_build(*args, **kwargs)
    real_next, count = it.iterator, [0]

    class Wrapped:
      def __next__(self):
        count[0] += 1
        if count[0] == 6:
          os.kill(os.getpid(), signal.SIGTERM)
        return next(real_next)

      def get_state(self):
        return real_next.get_state()

      def set_state(self, state):
        real_next.set_state(state)

    it.iterator = Wrapped()
    return it

  monkeypatch.setattr(pipeline, "build_train_iterator", build_with_sigterm)
  workdir = str(tmp_path / "interrupted")
  stopped = trainer.train_and_evaluate(_config(8), workdir)
  assert int(stopped.step) == 6
  assert checkpointing.TrainCheckpointer(workdir).latest_step() == 6
  monkeypatch.setattr(pipeline, "build_train_iterator", real_build)

  resumed = trainer.train_and_evaluate(_config(8), workdir)
  assert int(resumed.step) == 8
  _assert_trees_equal((resumed.params, resumed.ema_params, resumed.opt_state),
                      (straight.params, straight.ema_params, straight.opt_state))
  step, saved = checkpointing.load_train_arrays(workdir)
  assert step == 8
  _assert_trees_equal(saved["params"], straight.params)
  # The two EMAs (0.9999, 0.9996) are saved and differ.
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(saved["ema_params"][0]), jax.tree.leaves(saved["ema_params"][1])))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  real_step = c2i_step.train_step

  def poisoned(state, batch, **kwargs):
    new_state, metrics = real_step(state, batch, **kwargs)
    metrics["loss"] = jax.numpy.where(state.step >= 3, jax.numpy.nan, metrics["loss"])
    return new_state, metrics

  monkeypatch.setattr(c2i_step, "train_step", poisoned)
  rng = np.random.default_rng(0)
  dataset = (rng.integers(0, 16, (40, 4, 4, 4)).astype(np.int32),
             rng.integers(0, 10, 40).astype(np.int32))
  config = _config(10, checkpoint_every_steps=2)
  config.data.source = "arrays"
  workdir = str(tmp_path / "nan")
  with pytest.raises(trainer.NonFiniteLossError, match=r"step 4 is not finite.*step 2\)"):
    trainer.train_and_evaluate(config, workdir, dataset=dataset)
  assert checkpointing.TrainCheckpointer(workdir).latest_step() == 2


def test_init_from_params_directory(tmp_path):
  config = _config(1)
  config.seed = 7
  mesh = trainer.sharding.make_mesh(config.mesh)
  source = trainer.create_train_state(config, mesh, 256)[0].params
  checkpointing.save_params(tmp_path / "params", jax.device_get(source))
  config = _config(1, init_from=str(tmp_path / "params"))
  config.optim.blr = 1e-30  # one step that cannot move the parameters measurably
  state = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-20),
               (state.params, state.ema_params[0]), (source, source))


def test_bad_configs_fail_at_start(tmp_path):
  config = _config(1)
  config.data.source = "arrays"
  with pytest.raises(ValueError, match="needs train_and_evaluate"):
    trainer.train_and_evaluate(config, str(tmp_path / "a"))
  config = _config(1, global_batch_size=6)
  with pytest.raises(ValueError, match="divisible by the data x fsdp mesh size 8"):
    trainer.train_and_evaluate(config, str(tmp_path / "b"))
  config = _config(1, sample_every_steps=5)
  config.sample.params = "ema_5"
  with pytest.raises(ValueError, match="config.sample.params"):
    trainer.train_and_evaluate(config, str(tmp_path / "c"))
