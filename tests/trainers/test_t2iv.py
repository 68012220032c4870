"""The T2I/T2V task: the official keep-ratio shift and loss by hand, the corruption, and packed
training through the one loop: 8 fake devices (FSDP x tensor, and sequence-sharded) give the
losses of 1 device, and a resumed run is exact."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import t2iv as t2iv_configs
from grn_jax import checkpointing
from grn_jax import sharding
from grn_jax.data import captioned
from grn_jax.data import packing
from grn_jax.models import grn_t2iv
from grn_jax.trainers import loop
from grn_jax.trainers import t2iv

SCALE = grn_t2iv.SCALE_TOKEN_POSITION
FRAME0 = grn_t2iv.FRAME_OFFSET


def tiny_examples(num: int = 40, seed: int = 0) -> captioned.CaptionedArrays:
  """Images (1 x 4 x 4 tokens) and videos (3 x 2 x 3) with captions of 2..7 tokens; every other
  one has a short caption of 1..3 tokens too (config.corruption.short_caption_prob)."""
  rng = np.random.default_rng(seed)
  cfg = t2iv_configs.model_config("tiny")
  d, text_dim = cfg.hbq_rounds * cfg.latent_dim, cfg.text_dim
  examples = []
  for i in range(num):
    shape = (1, 4, 4) if i % 3 else (3, 2, 3)
    examples.append(dict(labels=rng.integers(0, 2, shape + (d,)).astype(np.uint8),
                         features=rng.standard_normal((2 + i % 6, text_dim)).astype(np.float32),
                         h_div_w=1.0 if i % 3 else 0.75))
  null = rng.standard_normal((1, text_dim))
  short = np.random.default_rng(seed + 1)
  for i, example in enumerate(examples[1::2]):
    example["short_features"] = short.standard_normal((1 + i % 3, text_dim)).astype(np.float32)
  return captioned.CaptionedArrays(examples, null)


def tiny_config(**mesh):
  config = t2iv_configs.get_config("variant=tiny,task=t2v" +
                                   (",shard=sequence" if mesh.pop("sequence", False) else ""))
  config.data.source = "arrays"
  config.model.attention_impl = "xla"
  config.train.update(total_steps=4, checkpoint_every_steps=2, log_every_steps=1,
                      async_checkpointing=False, peak_flops_per_device=1e12)
  config.corruption.p_first_frame = 0.5
  config.mesh.update(mesh or dict(data=1, fsdp=1, tensor=1))
  return config


def test_shift_keep_ratio_is_the_official_shift_pt():
  pt = jnp.array([0.0, 0.5, 0.9, 1.0])
  # alpha 4: n = 1 - pt -> 4n / (1 + 3n).
  want = [1 - 4 / 4, 1 - 2 / 2.5, 1 - 0.4 / 1.3, 1.0]
  np.testing.assert_allclose(t2iv.shift_keep_ratio(pt, 4.0), want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(t2iv.shift_keep_ratio(pt, 1004.0), want, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(t2iv.shift_keep_ratio(pt, 1.0), pt)


def test_packed_loss_by_hand():
  # One row, V = 6 slots: example 1 = 2 tokens + scale, example 2 = 1 token + scale, 1 padding.
  # D = 2 bits; example 2 has a single token; example 1's first token is a kept frame 0.
  visual_ids = jnp.array([[1, 1, 1, 2, 2, 0]])
  frame = jnp.array([[FRAME0, FRAME0 + 1, SCALE, FRAME0, SCALE, 0]])
  positions = jnp.stack([frame, jnp.zeros_like(frame), jnp.zeros_like(frame)], -1)
  labels = jnp.array([[[0, 1], [1, 1], [0, 0], [0, 0], [0, 0], [0, 0]]])
  p = jnp.array([[[0.9, 0.6], [0.2, 0.3], [0.5, 0.5], [0.7, 0.4], [0.5, 0.5], [0.5, 0.5]]])
  logits = jnp.log(jnp.stack([p, 1 - p], -1))   # P(bit = 0) = p
  first = jnp.array([[True, False, False, False, False, False]])
  loss, out = t2iv.packed_loss(logits, labels, visual_ids, positions, first, max_samples=3)
  ex1 = (-math.log(1 - 0.2) - math.log(1 - 0.3)) / 2        # token 2 only (token 1: frame 0)
  ex2 = (-math.log(0.7) - math.log(0.4)) / 2
  np.testing.assert_allclose(out["per_example_loss"][0], [ex1, ex2, 0.0], rtol=1e-6)
  np.testing.assert_allclose(out["example_weight"][0], [1, 1, 0])
  np.testing.assert_allclose(float(loss), (ex1 + ex2) / 2, rtol=1e-6)
  # argmax: token 2 predicts [1, 1] (right), example 2 predicts [0, 1] (one of two right).
  np.testing.assert_allclose(out["per_example_accuracy"][0], [1.0, 0.5, 0.0])
  np.testing.assert_allclose(float(out["accuracy"]), 0.75)


def test_corruption_keeps_bits_at_the_nominal_ratio_and_frame_zero():
  spec = t2iv_configs.PACKING["tiny"]
  source = tiny_examples(8, seed=1)
  row = packing.pack_row([source[0], source[1], source[2]],
                         packing.PackingSpec(**spec))  # a video, two images
  batch = {k: jnp.asarray(np.repeat(v[None], 512, 0)) for k, v in row.items()}
  inputs, pt, first = jax.jit(lambda k, b: t2iv.corrupt(
      k, b, keep_logit_mean=0.0, keep_logit_std=0.0, keep_shift=3.0, p_first_frame=0.5))(
          jax.random.key(0), batch)
  pt, first, inputs = np.asarray(pt), np.asarray(first), np.asarray(inputs)
  # pt = shift_pt(U(0, 1), 3): E[pt] = 1 - E[3n / (1 + 2n)] with n ~ U(0, 1).
  n = np.linspace(0, 1, 100001)
  assert abs(pt[:, :3].mean() - (1 - np.mean(3 * n / (1 + 2 * n)))) < 0.02
  same = (inputs == np.asarray(batch["labels"])).mean(-1)        # [rows, V]
  ids = np.asarray(batch["visual_ids"])
  is_scale = np.asarray(batch["positions"])[:, :96, 0] == SCALE
  # A bit equals the clean one when kept (pt) or by chance ((1 - pt) / 2), per example.
  for slot in range(3):
    tokens = (ids == slot + 1) & ~first & ~is_scale
    got = (same * tokens).sum(1) / tokens.sum(1)
    assert abs((got - (pt[:, slot] + (1 - pt[:, slot]) / 2)).mean()) < 0.01
  # Frame 0 of the video is kept whole in about half the rows, never in the images.
  video0 = (ids[0] == 1) & (row["positions"][:96, 0] == FRAME0)
  kept = first[:, video0].all(-1)
  assert (kept == first[:, video0].any(-1)).all() and not first[:, ~video0].any()
  assert abs(kept.mean() - 0.5) < 0.08
  assert (same[kept][:, video0] == 1).all()


def _run(config, workdir, dataset):
  losses = {}
  hook = lambda step, scalars: losses.update({step: scalars["loss"]} if scalars else {})
  state = loop.train(config, str(workdir), dataset, hooks=[hook])
  return losses, jax.tree.map(np.asarray, state.params)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
  return _run(tiny_config(), tmp_path_factory.mktemp("one"), tiny_examples())


def test_eight_devices_equal_one_and_resume_is_exact(one_device, tmp_path):
  losses1, params1 = one_device
  assert sorted(losses1) == [1, 2, 3, 4] and all(np.isfinite(list(losses1.values())))
  # The normal(0.02) output head starts every bit near chance, log 2.
  assert abs(losses1[1] - math.log(2)) < 0.02
  config = tiny_config(data=2, fsdp=2, tensor=2)
  config.train.total_steps = 2
  first, _ = _run(config, tmp_path, tiny_examples())
  assert checkpointing.TrainCheckpointer(str(tmp_path), 3, False).latest_step() == 2
  config.train.total_steps = 4
  resumed, params8 = _run(config, tmp_path, tiny_examples())   # resumes at step 2
  assert sorted(first) == [1, 2] and sorted(resumed) == [3, 4]
  both = {**first, **resumed}
  for step in (1, 2, 3, 4):
    np.testing.assert_allclose(both[step], losses1[step], rtol=2e-6)
  print("fsdp x tensor, resumed at 2: max |loss8 - loss1| =",
        max(abs(both[s] - losses1[s]) for s in both))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               params8, params1)


def test_sequence_sharded_eight_devices_equal_one(one_device, tmp_path):
  # Rows over 'data' (2), their sequence over 'fsdp' (4): fewer rows than devices.
  losses8, params8 = _run(tiny_config(data=2, fsdp=4, tensor=1, sequence=True), tmp_path,
                          tiny_examples())
  losses1, params1 = one_device
  np.testing.assert_allclose([losses8[s] for s in (1, 2, 3, 4)],
                             [losses1[s] for s in (1, 2, 3, 4)], rtol=2e-6)
  print("sequence-sharded: max |loss8 - loss1| =", max(abs(losses8[s] - losses1[s])
                                                       for s in losses1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               params8, params1)


def test_bad_configs_and_data_name_the_field():
  config = tiny_config()
  config.model.text_dim = 48
  with pytest.raises(ValueError, match="text_dim=48 must equal .*text_encoder.dim=32"):
    t2iv.validate_config(config)
  config = tiny_config()
  config.corruption.p_first_frame = 1.5
  with pytest.raises(ValueError, match="config.corruption.p_first_frame must lie in"):
    t2iv.validate_config(config)
  config = tiny_config()
  config.data.source = "tfds"
  with pytest.raises(ValueError, match="config.data.source must be one of"):
    t2iv.validate_config(config)
  data = tiny_examples(2)
  bad = dict(data[0], features=np.zeros((3, 16), np.float32))
  with pytest.raises(ValueError, match=r"example 1: features must be .*\[length >= 1, 32\]"):
    captioned.CaptionedArrays([data[0], bad], data.null_features)
  bad = dict(data[0], short_features=np.zeros((0, 32), np.float32))
  with pytest.raises(ValueError, match=r"example 0: short_features must be .*\[length >= 1, 32"):
    captioned.CaptionedArrays([bad], data.null_features)
  config = tiny_config()
  config.corruption.short_caption_prob = -0.1
  with pytest.raises(ValueError, match="config.corruption.short_caption_prob must lie in"):
    t2iv.validate_config(config)
  bad = dict(data[0], labels=data[0]["labels"] * 3)
  with pytest.raises(ValueError, match="labels must be bits"):
    captioned.CaptionedArrays([bad], data.null_features)
  task = t2iv.T2IVTask(tiny_config())
  with pytest.raises(ValueError, match="needs train.*CaptionedArrays"):
    task.input_iterator(None, (0, 8))


def test_2b_t2i_step_lowers_abstractly_fsdp_over_8_devices():
  # The pod recipe (launch/tpu_vm.sh run): bf16, remat, scanned blocks, splash attention,
  # FSDP over every device; lowered from abstract inputs only (no array is created).
  config = t2iv_configs.get_config("variant=2B,task=t2i")
  config.model.update(dtype="bfloat16", remat_policy="full", scan_layers=True,
                      attention_impl="splash")
  config.train.global_batch_size = 8
  mesh = sharding.make_mesh(config.mesh)
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  program = loop.build_program(config, mesh)
  text = program.lower().as_text()
  assert "sharding" in text
  params = program.abstract_state.params
  assert sum(x.size for x in jax.tree.leaves(params)) == 2_197_832_448
  big = max(jax.tree.leaves(params), key=lambda x: x.size)
  assert "fsdp" in str(big.sharding.spec)
  assert program.abstract_batch["labels"].shape == (8, 8704, 256)
