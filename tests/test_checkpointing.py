"""Orbax params directories (converter <-> init_from) and the training checkpoint manager."""

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
