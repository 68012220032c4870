"""Generation at scale: PNGs + npz from restored params, resumable by index, sharded; the
family-free core with a family of its own."""

import dataclasses
import functools
import os
import signal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import checkpointing
from grn_jax import hbq
from grn_jax import preemption
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.models import build_c2i
from grn_jax.models import build_tokenizer
from grn_jax.sampling import c2i
from grn_jax.sampling import generate
from grn_jax.sampling import outputs
from grn_jax.sampling import refine
from grn_jax.sampling.spec import SamplerSettings, SamplerSpec
from tests.sampling.scripted_model import ScriptedModel


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
  assert sorted(os.listdir(out_dir)) == sorted(
      [f"{i:06d}.png" for i in range(10)] + ["samples.npz", generate.RECORD_FILE])
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
  out = c2i.sample(config, params, np.arange(8) % 10, keys,
                   decode=(tokenizer_io.Uint8Decode(tokenizer_io.TokenizerDecode(tok_module)),
                           tok_params))
  np.testing.assert_array_equal(out.images, first["images"][:8])
  assert summary_record_is_the_family_record(config, params, tok_params)

  # Kill-and-resume: indices 3.. are missing; the new batches (3..10, ...) hold other rows than
  # before, yet every index reproduces its image exactly.
  for i in range(3, 10):
    os.remove(out_dir / f"{i:06d}.png")
  os.remove(path)
  family = c2i.C2IGeneration(config)
  summary = generate.generate(family, params, tokenizer_io.TokenizerDecode(tok_module),
                              tok_params, str(out_dir), **run_args(config))
  assert summary["start"] == 3 and summary["generated"] == 7 and summary["mean_steps"] == 2
  generate.write_npz(str(out_dir), path, 10, family.npz_fields)
  with np.load(path) as data:
    assert sorted(data.files) == sorted(first)
    for k in first:
      np.testing.assert_array_equal(data[k], first[k])
  summary = generate.generate(family, params, None, tok_params, str(out_dir), **run_args(config))
  assert summary["generated"] == 0  # complete: nothing to do

  # A rerun with other settings, counts or params is refused, naming what differs.
  for field, value, message in (("cfg_scale", 7.0, "sample.cfg_scale: 2.35 -> 7.0"),
                                ("per_class", 2, "sample.per_class: 1 -> 2"),
                                ("num_steps", 3, "sample.num_steps: 2 -> 3")):
    changed = config.copy_and_resolve_references()
    changed.sample[field] = value
    with pytest.raises(generate.GenerationMismatchError, match=message):
      generate.generate(c2i.C2IGeneration(changed), params, None, None, str(out_dir),
                        **run_args(config))
  other = jax.tree.map(lambda x: x + 1, params)
  with pytest.raises(generate.GenerationMismatchError, match=r"differing: params: '[0-9a-f]+' "):
    generate.generate(family, other, None, tok_params, str(out_dir), **run_args(config))
  with pytest.raises(generate.GenerationMismatchError, match=r"differing: decode_params: "):
    generate.generate(family, params, None, other, str(out_dir), **run_args(config))
  assert sorted(os.listdir(out_dir)) == sorted(  # nothing touched
      [f"{i:06d}.png" for i in range(10)] + ["samples.npz", generate.RECORD_FILE])


def run_args(config):
  return dict(batch_size=int(config.sample.batch_size), seed=int(config.sample.seed),
              mesh=sharding.make_mesh(config.mesh), show_progress=False)


def summary_record_is_the_family_record(config, params, tok_params):
  family = c2i.C2IGeneration(config)
  summary = generate.generate(family, params, None, tok_params, config.sample.output_dir,
                              **run_args(config))  # complete: only the summary
  return summary["record"] == dict(
      family.record(), seed=0, params=generate.params_fingerprint(params),
      decode_params=generate.params_fingerprint(tok_params)) and summary["generated"] == 0


def test_generate_rejects_bad_batch_params_and_task(setup):
  config, params, root = setup
  bad = config.copy_and_resolve_references()
  bad.sample.batch_size = 6
  with pytest.raises(ValueError, match="divisible"):
    generate.generate(c2i.C2IGeneration(bad), params, None, None, str(root / "bad"),
                      **run_args(bad))
  broken = dict(params)
  broken.pop(sorted(broken)[0])
  with pytest.raises(ValueError, match="do not match the model"):
    c2i.C2IGeneration(config).place_params(broken, sharding.make_mesh(config.mesh))
  bad = config.copy_and_resolve_references()
  bad.task = "t9"
  with pytest.raises(ValueError, match="no generation family"):
    generate.family_of(bad)
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


class CountingFamily:
  """A family of the core alone: index i is conditioned on i % 3, no tokenizer, no config."""

  npz_fields = {"group": "grn_group"}
  writer = outputs.PngWriter()

  def __init__(self, total):
    self.num_outputs = total
    self.settings = SamplerSettings(cfg_scale=2.0)
    self.model = ScriptedModel((2, 2, 3), 4, [4.0, 0.5, 9.0, 1.0])
    self.spec = SamplerSpec(label_shape=(2, 2, 3), label_values=4, hbq_rounds=2,
                            label_mode="ind", num_steps=3)

  def conditions(self, indices):
    return dict(group=(indices % 3).astype(np.int32))

  def rows_fn(self, decode_fn):
    return CountingRows(self.model, self.spec, decode_fn)

  def metadata(self, index):
    return {"grn_group": index % 3}

  def place_params(self, params, mesh):
    del mesh
    return params

  def record(self):
    return dict(task="counting")


@dataclasses.dataclass(frozen=True)
class CountingRows:
  model: ScriptedModel
  spec: SamplerSpec
  decode_fn: object

  def __call__(self, params, conditions, keys, settings, decode_params):
    group = conditions["group"]
    return refine.jitted_sampler(self.model, self.spec, self.decode_fn)(
        params, group, jnp.full_like(group, 3), keys, settings, decode_params)


def pixel_decode(params, latent):
  """latent [B, 2, 2, 2] -> 'images' [B, 4, 4, 3] in [-1, 1]."""
  del params
  return jnp.repeat(jnp.repeat(latent[..., :1], 2, axis=1), 2, axis=2).repeat(3, axis=-1)


def test_the_core_serves_any_family(tmp_path):
  family = CountingFamily(11)
  mesh = sharding.make_mesh({"data": -1})
  summary = generate.generate(family, None, pixel_decode, None, str(tmp_path), batch_size=8,
                              seed=5, mesh=mesh, show_progress=False)
  assert summary["generated"] == 11 and summary["record"] == dict(
      task="counting", seed=5, params=generate.params_fingerprint(None),
      decode_params=generate.params_fingerprint(None))
  generate.write_npz(str(tmp_path), str(tmp_path / "s.npz"), 11, family.npz_fields)
  with np.load(tmp_path / "s.npz") as data:
    assert sorted(data.files) == ["entropy", "group", "images", "nfe", "steps"]
    np.testing.assert_array_equal(data["group"], np.arange(11) % 3)
    np.testing.assert_array_equal(data["steps"], 3)
    images = data["images"]
  assert images.shape == (11, 4, 4, 3) and images.dtype == np.uint8
  # Image i is the decode of the loop's sample with key fold_in(key(5), i).
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(11))
  group = jnp.arange(11) % 3
  out = refine.jitted_sampler(family.model, family.spec)(
      None, group, jnp.full_like(group, 3), keys, family.settings)
  latent = hbq.dequantize(out.labels, 2, "ind")
  np.testing.assert_array_equal(images, tokenizer_io.to_uint8(pixel_decode(None, latent)))


def test_damaged_pngs_are_regenerated_and_foreign_folders_refused(tmp_path):
  family = CountingFamily(11)
  args = dict(batch_size=8, seed=5, mesh=sharding.make_mesh({"data": -1}), show_progress=False)
  generate.generate(family, None, pixel_decode, None, str(tmp_path), **args)
  originals = {i: (tmp_path / f"{i:06d}.png").read_bytes() for i in range(11)}
  (tmp_path / "000002.png").write_bytes(b"")                             # zero bytes
  (tmp_path / "000005.png").write_bytes(originals[5][:len(originals[5]) // 2])  # truncated
  (tmp_path / "000009.png").write_bytes(originals[1])                   # index 1's metadata
  (tmp_path / "000007.png.tmp").write_bytes(b"half")                    # an interrupted write
  summary = generate.generate(family, None, pixel_decode, None, str(tmp_path), **args)
  assert summary["start"] == 2 and summary["generated"] == 3  # 2, 5, 9 in one batch
  assert {i: (tmp_path / f"{i:06d}.png").read_bytes() for i in range(11)} == originals
  assert not (tmp_path / "000007.png.tmp").exists()

  foreign = tmp_path / "foreign"
  foreign.mkdir()
  (foreign / "000000.png").write_bytes(originals[0])
  with pytest.raises(generate.GenerationMismatchError,
                     match="1 sample files but no generation.json.*delete"):
    generate.generate(family, None, pixel_decode, None, str(foreign), **args)


class StoppedFamily(CountingFamily):
  """Sends itself SIGINT while the second batch is being prepared."""

  calls = 0

  def conditions(self, indices):
    self.calls += 1
    if self.calls == 2:
      os.kill(os.getpid(), signal.SIGINT)
    return super().conditions(indices)


def test_a_stop_signal_finishes_the_batch_and_raises_interrupted(tmp_path):
  args = dict(batch_size=8, seed=5, mesh=sharding.make_mesh({"data": -1}), show_progress=False)
  with pytest.raises(preemption.Interrupted, match=r"16 of 19 outputs written\) stopped by SIGINT"):
    generate.generate(StoppedFamily(19), None, pixel_decode, None, str(tmp_path), **args)
  assert sorted(os.listdir(tmp_path)) == sorted(
      [f"{i:06d}.png" for i in range(16)] + [generate.RECORD_FILE])
  summary = generate.generate(CountingFamily(19), None, pixel_decode, None, str(tmp_path), **args)
  assert summary["start"] == 16 and summary["generated"] == 3
