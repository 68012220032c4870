"""Generation at scale: PNGs + npz from restored params, resumable by index, sharded."""

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import checkpointing
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.models import build_c2i
from grn_jax.models import build_tokenizer
from grn_jax.sampling import api
from grn_jax.sampling import generate


def random_params(init_fn, *args, seed=0):
  """Random params of the right tree, shapes and dtypes without running (compiling) init."""
  abstract = nn.unbox(jax.eval_shape(init_fn, jax.random.key(0), *args)["params"])
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: (rng.normal(size=s.shape) / np.sqrt(max(1, np.prod(s.shape[:-1])))).astype(
          s.dtype), abstract)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("generate")
  config = c2i_configs.get_config("variant=tiny")
  module = build_c2i(config.model)
  x = (jnp.zeros((1, 4, 4, 4), jnp.int32), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  params = random_params(module.init, *x, seed=1)
  tok = build_tokenizer(config.tokenizer)  # decoder params only: sampling never encodes
  tok_params = random_params(functools.partial(tok.init, method="decode"),
                             jnp.zeros((1, 4, 4, 4)), seed=2)
  checkpointing.save_params(root / "grn", params)
  checkpointing.save_params(root / "tok", jax.device_get(tok_params))
  config.sample.update(checkpoint=str(root / "grn"), per_class=1, num_images=10, batch_size=8,
                       num_steps=2, output_dir=str(root / "samples"))
  config.tokenizer.checkpoint = str(root / "tok")
  return config, params, root


def test_generate_writes_pngs_and_npz_and_resumes_by_index(setup):
  config, params, root = setup
  out_dir = root / "samples"
  path = generate.generate_to_workdir(config, str(root / "workdir"))
  assert path == str(out_dir / "samples.npz")
  assert sorted(os.listdir(out_dir)) == [f"{i:06d}.png" for i in range(10)] + ["samples.npz"]
  with np.load(path) as data:
    first = {k: data[k] for k in data.files}
  assert first["images"].dtype == np.uint8 and first["images"].shape == (10, 64, 64, 3)
  np.testing.assert_array_equal(first["labels"], np.arange(10))
  np.testing.assert_array_equal(first["steps"], 2)
  np.testing.assert_array_equal(first["nfe"], 3)  # t = 0 unguided, t = .5 in (0.44, 1): 1 + 2
  assert np.all((first["entropy"] > 0) & (first["entropy"] <= 1))
  image, meta = generate.read_png(str(out_dir / "000004.png"))
  np.testing.assert_array_equal(image, first["images"][4])
  assert meta["grn_class"] == 4 and meta["grn_steps"] == 2
  assert len(np.unique(first["images"].reshape(10, -1), axis=0)) == 10

  # The images are the tokenizer decode of the sampled labels (same per-index keys).
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(8))
  out = api.sample(config, params, np.arange(8) % 10, keys,
                   decode=(tokenizer_io.Uint8Decode(tokenizer_io.TokenizerDecode(tok_module)),
                           tok_params))
  np.testing.assert_array_equal(out.images, first["images"][:8])

  # Kill-and-resume: indices 3.. are missing; the new batches (3..10, ...) hold other rows than
  # before, yet every index reproduces its image exactly.
  for i in range(3, 10):
    os.remove(out_dir / f"{i:06d}.png")
  os.remove(path)
  summary = generate.generate(config, params, tokenizer_io.TokenizerDecode(tok_module),
                              tok_params, str(out_dir), show_progress=False)
  assert summary["start"] == 3 and summary["generated"] == 7 and summary["mean_steps"] == 2
  generate.write_npz(str(out_dir), path, 10)
  with np.load(path) as data:
    for k in first:
      np.testing.assert_array_equal(data[k], first[k])
  summary = generate.generate(config, params, None, None, str(out_dir), show_progress=False)
  assert summary["generated"] == 0  # complete: nothing to do


def test_generate_rejects_bad_batch_and_params(setup):
  config, params, root = setup
  bad = config.copy_and_resolve_references()
  bad.sample.batch_size = 6
  with pytest.raises(ValueError, match="divisible"):
    generate.generate(bad, params, None, None, str(root / "bad"), show_progress=False)
  broken = dict(params)
  broken.pop(sorted(broken)[0])
  with pytest.raises(ValueError, match="do not match the model"):
    generate.place_params(config, broken, sharding.make_mesh(config.mesh))
  nohub = config.copy_and_resolve_references()
  nohub.tokenizer.checkpoint = "hf://bytedance-research/GRN/x.ckpt"
  with pytest.raises(ValueError, match="converted params directory"):
    tokenizer_io.load_tokenizer(nohub.tokenizer)


def test_sampling_params_from_training_checkpoint(tmp_path):
  config = c2i_configs.get_config("variant=tiny")
  state = dict(step=np.int32(7), params=dict(w=np.zeros(3, np.float32)), opt_state=dict(),
               ema_params=(dict(w=np.ones(3, np.float32)), dict(w=np.full(3, 2, np.float32))))
  ckpt = checkpointing.TrainCheckpointer(tmp_path, async_save=False)
  ckpt.save(7, state, {}, {})
  ckpt.close()
  for which, value in (("ema_0", 1), ("ema_1", 2), ("params", 0)):
    config.sample.params = which
    np.testing.assert_array_equal(generate.load_sampling_params(config, str(tmp_path))["w"],
                                  value)
  config.sample.params = "ema_5"
  with pytest.raises(ValueError, match="EMAs"):
    generate.load_sampling_params(config, str(tmp_path))
