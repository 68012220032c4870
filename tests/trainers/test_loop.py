"""The generic loop: exact resume after SIGTERM, NaN stop, init_from, one compile, abstract AOT,
metric flushes, start-up errors (C2I tiny task on 8 fake devices)."""

import logging
import os
import signal

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import c2i as c2i_configs
from grn_jax import checkpointing
from grn_jax import preemption
from grn_jax import sharding
from grn_jax.data import pipeline
from grn_jax.trainers import c2i
from grn_jax.trainers import loop
from grn_jax.trainers import resume


def _config(total_steps, **train_overrides):
  config = c2i_configs.get_config("variant=tiny")
  fields = dict(total_steps=total_steps, peak_flops_per_device=1e11, log_every_steps=2,
                checkpoint_every_steps=3)
  config.train.update({**fields, **train_overrides})
  return config


def _assert_trees_equal(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_sigterm_and_resume_reproduce_the_uninterrupted_run(tmp_path, monkeypatch):
  straight = loop.train(_config(8), str(tmp_path / "straight"))
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
  stopped = loop.train(_config(8), workdir)
  assert int(stopped.step) == 6
  assert checkpointing.TrainCheckpointer(workdir).latest_step() == 6
  monkeypatch.setattr(pipeline, "build_train_iterator", real_build)

  resumed = loop.train(_config(8), workdir)
  assert int(resumed.step) == 8
  _assert_trees_equal((resumed.params, resumed.ema_params, resumed.opt_state),
                      (straight.params, straight.ema_params, straight.opt_state))
  step, saved = checkpointing.load_train_arrays(workdir)
  assert step == 8
  _assert_trees_equal(saved["params"], straight.params)
  # The two EMAs (0.9999, 0.9996) are saved and differ.
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(saved["ema_params"][0]), jax.tree.leaves(saved["ema_params"][1])))


def test_sigint_saves_and_stops_like_sigterm_and_the_result_says_so(tmp_path):
  def ctrl_c_at_2(step, scalars):
    del scalars
    if step == 2:
      os.kill(os.getpid(), signal.SIGINT)

  workdir = str(tmp_path / "run")
  # The handler the test starts with: Python's default, or SIG_IGN in a process started in the
  # background of a non-interactive shell (where a CI script may run).
  before = signal.getsignal(signal.SIGINT)
  result = loop.fit(_config(8), workdir, hooks=[ctrl_c_at_2])
  assert result.stopped_by == "SIGINT" and int(result.state.step) == 3
  assert checkpointing.TrainCheckpointer(workdir).latest_step() == 3
  with pytest.raises(preemption.Interrupted, match=r"checkpoint of step 3 saved\) stopped by "
                                                   r"SIGINT; run the same command again"):
    result.raise_if_stopped(workdir)
  assert signal.getsignal(signal.SIGINT) is before  # handler put back
  finished = loop.fit(_config(3), workdir)  # holds step 3 of 3: nothing to do, not a stop
  assert finished.stopped_by is None and finished.raise_if_stopped(workdir) is finished.state


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
  real_loss = c2i.train_loss
  # The loss sees the step through its key, fold_in(key(seed), state.step).
  key_of_4th_step = jax.random.key_data(jax.random.fold_in(jax.random.key(0), 3))

  def poisoned(params, batch, key, **kwargs):
    loss, outputs = real_loss(params, batch, key, **kwargs)
    is_4th_step = jax.numpy.all(jax.random.key_data(key) == key_of_4th_step)
    return jax.numpy.where(is_4th_step, jax.numpy.nan, loss), outputs

  monkeypatch.setattr(c2i, "train_loss", poisoned)
  rng = np.random.default_rng(0)
  dataset = (rng.integers(0, 16, (40, 4, 4, 4)).astype(np.int32),
             rng.integers(0, 10, 40).astype(np.int32))
  config = _config(10, checkpoint_every_steps=2, log_every_steps=5)
  config.data.source = "arrays"
  workdir = str(tmp_path / "nan")
  # Found at the save of step 4 (no flush there), naming the first bad step.
  with pytest.raises(loop.NonFiniteLossError, match=r"nan .* at step 4 is not finite.*step 2\)"):
    loop.train(config, workdir, dataset=dataset)
  assert checkpointing.TrainCheckpointer(workdir).latest_step() == 2


def test_init_from_params_directory(tmp_path):
  config = _config(1)
  config.seed = 7
  mesh = sharding.make_mesh(config.mesh)
  source = loop.build_program(config, mesh, 256).init().params
  checkpointing.save_params(tmp_path / "params", jax.device_get(source))
  config = _config(1, init_from=str(tmp_path / "params"))
  config.optim.blr = 1e-30  # one step that cannot move the parameters measurably
  state = loop.train(config, str(tmp_path / "run"))
  # (the EMA update d e + (1 - d) p of e = p rounds to within an ulp of p)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6,
                                                       atol=1e-20),
               (state.params, state.ema_params[0]), (source, source))


def test_one_compile_and_flushed_metrics(tmp_path, caplog):
  """The step compiles once; no flush, reset or save compiles anything after the first ones;
  the hooks see every step and the flushed means."""
  seen, compiles = [], []

  def hook(step, scalars):
    seen.append((step, scalars))
    compiles.append(sum("Compiling" in r.getMessage() for r in caplog.records))

  jax.config.update("jax_log_compiles", True)
  try:
    with caplog.at_level(logging.WARNING):
      loop.train(_config(8), str(tmp_path / "run"), hooks=[hook])
  finally:
    jax.config.update("jax_log_compiles", False)
  assert sum("Compiling jit(step)" in r.getMessage() for r in caplog.records) == 1
  assert compiles[3] == compiles[-1]   # steps 4..8: two flushes, two saves, no compile
  assert [s for s, _ in seen] == list(range(1, 9))
  flushed = {s: m for s, m in seen if m is not None}
  assert sorted(flushed) == [2, 4, 6, 8]
  for scalars in flushed.values():
    assert np.isfinite(scalars["loss"]) and 0 <= scalars["accuracy"] <= 1
    assert scalars["examples_per_second"] > 0 and np.isfinite(scalars["mfu"])
    assert any(k.startswith("accuracy/keep_") for k in scalars)
  assert flushed[2]["lr"] < flushed[8]["lr"]   # warm-up


def test_step_compiles_abstractly_without_creating_an_array(monkeypatch, new_arrays):
  """What the TPU AOT command needs: building and compiling the program on a mesh creates no
  concrete array (init inputs and the seed's key are traced inside the jits)."""
  config = _config(1)
  config.mesh.update(data=2, fsdp=2, tensor=2)
  config.model.update(scan_layers=True, remat_policy="full")
  mesh = sharding.make_mesh(config.mesh)

  def no_device_put(*args, **kwargs):
    raise AssertionError("jax.device_put called while building the abstract program")

  monkeypatch.setattr(jax, "device_put", no_device_put)
  program = loop.build_program(config, mesh)
  compiled = loop.compile_train_step(config, mesh)
  assert not new_arrays()
  w3 = program.abstract_state.params["blocks_post"]["layers"]["mlp"]["w3"]["kernel"]
  assert w3.sharding.spec == P(None, "tensor", "fsdp")  # scanned: (layers, mlp, embed)
  assert program.abstract_batch["labels"].sharding.spec == P(("data", "fsdp"), None, None, None)
  memory = compiled.memory_analysis()
  assert memory.alias_size_in_bytes > 0.9 * memory.argument_size_in_bytes  # donated state


def test_unknown_task_and_bad_configs_fail_at_start(tmp_path):
  config = _config(1)
  config.task = "t2x"
  with pytest.raises(ValueError, match=r"config.task='t2x' is not a training task; known tasks: "
                                       r"c2i, tokenizer"):
    loop.train(config, str(tmp_path / "t"))
  config = _config(1)
  config.data.source = "arrays"
  with pytest.raises(ValueError, match=r"needs train\(\.\.\., dataset="):
    loop.train(config, str(tmp_path / "a"))
  config = _config(1, global_batch_size=6)
  with pytest.raises(ValueError, match="divisible by the data x fsdp mesh size 8"):
    loop.train(config, str(tmp_path / "b"))
  config = _config(1, sample_every_steps=5)
  config.sample.params = "ema_5"
  with pytest.raises(ValueError, match="config.sample.params"):
    loop.train(config, str(tmp_path / "c"))
  config = _config(1)
  config.train.bogus = 1
  with pytest.raises(ValueError, match=r"config.train: .*unknown fields \['bogus'\]"):
    loop.train(config, str(tmp_path / "d"))
  assert not any((tmp_path / name).exists() for name in "tabcd")


def test_profile_steps_writes_a_tensorboard_trace(tmp_path):
  workdir = tmp_path / "run"
  loop.train(_config(3), str(workdir), profile_steps=1)
  traces = list((workdir / "plugins" / "profile").glob("*/*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_resume_names_every_changed_field_unless_allowed(tmp_path):
  workdir = str(tmp_path / "run")
  loop.train(_config(3), workdir)
  changed = _config(3, global_batch_size=16)
  changed.optim.blr = 0.125
  with pytest.raises(resume.ResumeConfigError,
                     match=r"optim.blr: [0-9.e-]+ -> 0.125; train.global_batch_size: 8 -> 16\. .*"
                           r"resume_allow_changes=optim.blr,train.global_batch_size"):
    loop.train(changed, workdir)
  free = _config(3, log_every_steps=1, checkpoint_every_steps=1)  # cadence: free to change
  free.mesh.update(data=4, fsdp=2)
  assert int(loop.train(free, workdir).step) == 3
  changed.train.resume_allow_changes = "optim.blr,train.global_batch_size"
  assert int(loop.train(changed, workdir).step) == 3  # accepted explicitly: holds step 3 of 3
  assert resume.config_changes({"a": 1}, {"a": 2}, allow="*") == []
