"""FID Inception in Flax: converter key coverage, npz round trip, missing-weights errors, and the
forward pass on small inputs (random weights; parity with pytorch-fid is checked outside the
project, see the evaluation report)."""


import jax
import numpy as np
import pytest

from grn_jax.convert import common
from grn_jax.evaluation import fid_protocol
from grn_jax.evaluation import inception


def _random_state_dict(seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for key, shape in inception.torch_state_dict_shapes().items():
    if key.endswith("conv.weight"):
      out[key] = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[1:]))
    elif key.endswith(("running_var", "bn.weight")):
      out[key] = rng.uniform(0.5, 1.5, shape)
    else:
      out[key] = rng.normal(size=shape) * 0.1
  return {k: v.astype(np.float32) for k, v in out.items()}


@pytest.fixture(scope="module")
def params():
  return inception.params_from_torch(_random_state_dict())


def test_state_dict_layout_matches_the_module(params):
  shapes = inception.torch_state_dict_shapes()
  # torchvision Inception3 without AuxLogits: 94 BasicConv2d (5 tensors each) + fc (2).
  assert len(shapes) == 94 * 5 + 2
  assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
  assert shapes["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
  abstract = inception._abstract_params()
  assert jax.tree.structure(abstract) == jax.tree.structure(params)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, abstract, params)))
  # Values land where they belong (conv OIHW -> HWIO, fc transposed) and invert exactly.
  sd = _random_state_dict()
  np.testing.assert_array_equal(params["Mixed_5b"]["branch5x5_2"]["kernel"][1, 2, 3, 4],
                                sd["Mixed_5b.branch5x5_2.conv.weight"][4, 3, 1, 2])
  np.testing.assert_array_equal(params["fc_kernel"], sd["fc.weight"].T)
  back = inception.params_to_torch(params)
  assert set(back) == set(sd)
  assert all(np.array_equal(back[k], sd[k]) for k in sd)


def test_converter_lists_every_problem():
  sd = _random_state_dict()
  sd["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.zeros(())  # ignored
  del sd["Mixed_6a.branch3x3.conv.weight"]
  sd["fc.bias"] = np.zeros(1000, np.float32)
  sd["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
  with pytest.raises(common.CheckpointMismatchError) as err:
    inception.params_from_torch(sd)
  msg = str(err.value)
  assert "Mixed_6a.branch3x3.conv.weight" in msg and "AuxLogits.fc.weight" in msg
  assert "mis-shaped fc.bias" in msg and "num_batches_tracked" not in msg


def test_npz_round_trip_and_missing_weights(tmp_path, params, monkeypatch):
  path = str(tmp_path / "inc.npz")
  inception.save_npz(params, path)
  loaded = inception.load_params(path)
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, loaded, params)))
  # A .pth request is served by the converted .npz beside it, without torch.
  assert inception.load_params(str(tmp_path / "inc.pth"))["fc_bias"].shape == (1008,)
  data = dict(np.load(path))
  del data["Mixed_7c/branch_pool/kernel"]
  np.savez(tmp_path / "bad.npz", **data)
  with pytest.raises(common.CheckpointMismatchError, match="Mixed_7c/branch_pool/kernel"):
    inception.load_params(str(tmp_path / "bad.npz"))
  monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "none" / "w.pth"))
  assert not inception.weights_available()
  with pytest.raises(FileNotFoundError, match="wget https://github.com/mseitzer/pytorch-fid"):
    inception.load_params()


def test_features_small_input_deterministic_and_batch_independent(params):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 75, 75, 3), dtype=np.uint8)
  feature_fn = inception.make_feature_fn(params, batch_size=4, resize_to=0)
  out = feature_fn(images)
  assert out["pool"].shape == (5, 2048) and out["logits"].shape == (5, 1008)
  assert np.all(out["pool"] >= 0)  # average of ReLU outputs
  np.testing.assert_allclose(out["logits"], out["logits_unbiased"] + params["fc_bias"],
                             rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(out["logits_unbiased"], out["pool"] @ params["fc_kernel"],
                             rtol=1e-4, atol=1e-3)
  # The padded last batch and batch composition do not change an image's features.
  single = feature_fn(images[4:5])
  np.testing.assert_allclose(single["pool"][0], out["pool"][4], rtol=1e-5, atol=1e-5)
  # uint8 and [0, 1] floats are the same input.
  as_float = feature_fn((images / 255.0).astype(np.float32))
  np.testing.assert_allclose(as_float["pool"], out["pool"], rtol=1e-4, atol=1e-4)


def test_pytorch_fid_protocol_is_bilinear_half_pixel():
  # 2x upsampling of a 2-pixel ramp with align_corners=False: [0, .25, .75, 1] of the range.
  img = np.zeros((1, 2, 2, 3), np.float32)
  img[:, :, 1] = 1.0
  out = np.asarray(fid_protocol.preprocess(img, resize_to=4, protocol=fid_protocol.PYTORCH_FID))
  np.testing.assert_allclose(out[0, 0, :, 0], 2 * np.array([0, 0.25, 0.75, 1.0]) - 1, atol=1e-6)
