"""Orbax params directories (converter <-> init_from) and the training checkpoint manager."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from grn_jax import checkpointing
from grn_jax import sharding


def _params():
  rng = np.random.default_rng(0)
  return {"block": {"kernel": rng.standard_normal((8, 16)).astype(np.float32),
                    "bias": np.arange(16, dtype=np.float32)},
          "table": rng.standard_normal((11, 8)).astype(np.float32)}


def test_params_round_trip_numpy_and_sharded(tmp_path):
  params = _params()
  checkpointing.save_params(tmp_path / "p", params)
  restored = checkpointing.restore_params(tmp_path / "p")
  jax.tree.map(np.testing.assert_array_equal, restored, params)
  assert isinstance(restored["table"], np.ndarray)
  mesh = sharding.make_mesh(dict(data=1, fsdp=-1, tensor=1))
  specs = {"block": {"kernel": P("fsdp", None), "bias": P()}, "table": P()}
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                            sharding=NamedSharding(mesh, s)),
                          params, specs)
  on_mesh = checkpointing.restore_params(tmp_path / "p", abstract)
  assert on_mesh["block"]["kernel"].sharding.spec == P("fsdp", None)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), on_mesh, params)


def test_params_errors(tmp_path):
  checkpointing.save_params(tmp_path / "p", _params())
  with pytest.raises(FileExistsError):
    checkpointing.save_params(tmp_path / "p", _params())
  with pytest.raises(FileNotFoundError, match="no params checkpoint"):
    checkpointing.restore_params(tmp_path / "missing")
  wrong = {"block": {"kernel": jax.ShapeDtypeStruct((8, 32), jnp.float32)},
           "extra": jax.ShapeDtypeStruct((2,), jnp.float32)}
  with pytest.raises(ValueError, match=r"missing \[\"\['extra'\]\"\].*unexpected.*bias.*"
                                       r"\['block'\]\['kernel'\]: \(8, 16\) vs \(8, 32\)"):
    checkpointing.restore_params(tmp_path / "p", wrong)


def test_train_checkpointer_keeps_latest_and_restores(tmp_path):
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  state = jax.device_put({"w": jnp.arange(16.0), "step": jnp.int32(0)},
                         sharding.replicated(mesh))
  ckpt = checkpointing.TrainCheckpointer(tmp_path, max_to_keep=2)
  for step in range(1, 5):
    state = jax.tree.map(lambda x: x + 1, state)
    ckpt.save(step, state, {"next_index": step * 10}, {"seed": 0})
  ckpt.wait()
  assert ckpt.manager.all_steps() == [3, 4] and ckpt.latest_step() == 4
  restored, data = ckpt.restore(3, checkpointing.abstract_like(state))
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(16.0) + 3)
  assert data == {"next_index": 30} and restored["w"].sharding == state["w"].sharding
  ckpt.close()
  step, arrays = checkpointing.load_train_arrays(tmp_path)
  assert step == 4 and int(arrays["step"]) == 4
  assert checkpointing.load_train_config(tmp_path) == (4, {"seed": 0})
  with pytest.raises(FileNotFoundError, match="no training checkpoint"):
    checkpointing.load_train_config(tmp_path / "elsewhere")


def _damage(step_dir, how):
  """Damages the state item of a checkpoint directory in one of the ways a crash or a disk
  leaves it: the item gone, its data files truncated or with a flipped byte, an empty manifest."""
  files = sorted(p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d")
  if how == "missing":
    shutil.rmtree(step_dir / "state")
  elif how == "truncated":
    for f in files:
      f.write_bytes(f.read_bytes()[:f.stat().st_size // 2])
  elif how == "flipped":
    for f in files:
      data = bytearray(f.read_bytes())
      data[len(data) // 2] ^= 0xFF
      f.write_bytes(bytes(data))
  elif how == "manifest":
    for f in (step_dir / "state").rglob("manifest.ocdbt"):
      f.write_bytes(b"")


@pytest.mark.parametrize("how", ["missing", "truncated", "flipped", "manifest"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, how, caplog):
  state = {"w": jnp.arange(64.0), "step": jnp.int32(0)}
  ckpt = checkpointing.TrainCheckpointer(tmp_path, async_save=False)
  for step in (1, 2, 3):
    ckpt.save(step, jax.tree.map(lambda x, s=step: x + s, state), {"next_index": step}, {})
  ckpt.close()
  _damage(tmp_path / "checkpoints" / "3", how)
  step, arrays = checkpointing.load_train_arrays(tmp_path)  # sampling: reads, moves nothing
  assert step == 2 and (tmp_path / "checkpoints" / "3").exists()
  np.testing.assert_array_equal(arrays["w"], np.arange(64.0) + 2)
  ckpt = checkpointing.TrainCheckpointer(tmp_path, async_save=False)
  with caplog.at_level("WARNING"):
    step, restored, data = ckpt.restore_latest(checkpointing.abstract_like(state))
  assert step == 2 and data == {"next_index": 2}
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(64.0) + 2)
  assert any("is damaged" in r.getMessage() and "step 2" in r.getMessage()
             for r in caplog.records)
  # Nothing deleted: the damaged checkpoint is kept aside, the intact ones in place, and the
  # resumed run can save step 3 again.
  assert (tmp_path / "checkpoints_damaged" / "3").is_dir()
  assert ckpt.manager.all_steps() == [1, 2]
  ckpt.save(3, jax.tree.map(lambda x: x + 3, state), {"next_index": 3}, {})
  ckpt.close()
  assert checkpointing.load_train_arrays(tmp_path)[0] == 3


def test_all_damaged_or_another_model_is_an_error_and_nothing_moves(tmp_path):
  state = {"w": jnp.arange(64.0), "step": jnp.int32(0)}
  ckpt = checkpointing.TrainCheckpointer(tmp_path, async_save=False)
  ckpt.save(1, state, {}, {})
  ckpt.close()
  ckpt = checkpointing.TrainCheckpointer(tmp_path, async_save=False)
  other = {"w": jax.ShapeDtypeStruct((65,), jnp.float32),
           "step": jax.ShapeDtypeStruct((), jnp.int32)}
  with pytest.raises(ValueError, match=r"another model .*only in the checkpoint \[\(64,\)\]"):
    ckpt.restore_latest(other)  # orbax alone would restore (64,) into (65,) without a word
  _damage(tmp_path / "checkpoints" / "1", "truncated")
  with pytest.raises(checkpointing.DamagedCheckpointError,
                     match="damaged, or of another model.*Nothing was deleted"):
    ckpt.restore_latest(checkpointing.abstract_like(state))
  ckpt.close()
  assert (tmp_path / "checkpoints" / "1").is_dir()
  assert not (tmp_path / "checkpoints_damaged").exists()
