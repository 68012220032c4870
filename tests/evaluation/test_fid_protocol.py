"""The two FID protocols against the libraries that define them: torch-fidelity's TF1 bilinear
resize and normalisation (and its whole Inception network on our weights), pytorch-fid's
F.interpolate; which protocol a reference file gets; the protocol stored with our statistics."""

import importlib.util
import sys
import types

import numpy as np
import pytest

from grn_jax.evaluation import fid_protocol
from grn_jax.evaluation import inception
from grn_jax.evaluation import reference
from tests.evaluation.test_inception import _random_state_dict

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def torch_fidelity_modules():
  """torch-fidelity's interpolation and Inception modules (requirements-test.txt).

  Imported without the package's __init__, which imports its CLIP extractor and thereby
  torchvision; the Inception code needs neither.
  """
  spec = importlib.util.find_spec("torch_fidelity")
  if spec is None:
    pytest.skip("torch-fidelity is not installed (requirements-test.txt)")
  package = types.ModuleType("torch_fidelity")
  package.__path__ = list(spec.submodule_search_locations)
  saved = {k: v for k, v in sys.modules.items() if k.startswith("torch_fidelity")}
  sys.modules["torch_fidelity"] = package
  try:
    interpolate = importlib.import_module("torch_fidelity.interpolate_compat_tensorflow")
    extractor = importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")
  finally:
    for k in [k for k in sys.modules if k.startswith("torch_fidelity")]:
      del sys.modules[k]
    sys.modules.update(saved)
  return interpolate, extractor


def _nchw(images: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("size,out", [((32, 32), (299, 299)), ((256, 256), (299, 299)),
                                      ((512, 384), (299, 299)), ((13, 7), (5, 11))])
def test_tf1_resize_matches_torch_fidelity(torch_fidelity_modules, size, out):
  interpolate, _ = torch_fidelity_modules
  rng = np.random.default_rng(sum(size))
  images = rng.integers(0, 256, (2,) + size + (3,)).astype(np.float32)
  expected = interpolate.interpolate_bilinear_2d_like_tensorflow1x(
      _nchw(images), size=out, align_corners=False).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(fid_protocol.resize_bilinear_tf1(images, *out))
  # Same float32 operations in the same order: equal to float32 rounding of values <= 255.
  np.testing.assert_allclose(got, expected, rtol=0, atol=255 * 2 ** -22)  # bit-exact on CPU
  # And not what the half-pixel (pytorch-fid) resize gives.
  half_pixel = torch.nn.functional.interpolate(_nchw(images), size=out, mode="bilinear",
                                               align_corners=False).numpy().transpose(0, 2, 3, 1)
  assert np.max(np.abs(got - half_pixel)) > 1.0


def test_preprocess_of_both_protocols(torch_fidelity_modules):
  interpolate, _ = torch_fidelity_modules
  images = np.random.default_rng(1).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
  got = np.asarray(fid_protocol.preprocess(images, protocol=fid_protocol.TORCH_FIDELITY))
  resized = interpolate.interpolate_bilinear_2d_like_tensorflow1x(
      _nchw(images).float(), size=(299, 299), align_corners=False)
  np.testing.assert_allclose(got, ((resized - 128) / 128).numpy().transpose(0, 2, 3, 1),
                             rtol=0, atol=2 ** -20)
  got = np.asarray(fid_protocol.preprocess(images, protocol=fid_protocol.PYTORCH_FID))
  expected = torch.nn.functional.interpolate(_nchw(images).float() / 255, size=(299, 299),
                                             mode="bilinear", align_corners=False) * 2 - 1
  np.testing.assert_allclose(got, expected.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-6)
  # [0, 1] floats are the same images as uint8 under both protocols.
  for protocol in fid_protocol.PROTOCOLS:
    np.testing.assert_allclose(fid_protocol.preprocess(images / 255.0, protocol=protocol),
                               fid_protocol.preprocess(images, protocol=protocol), atol=1e-5)
  with pytest.raises(ValueError, match="unknown FID protocol 'tf2'"):
    fid_protocol.preprocess(images, protocol="tf2")


def test_inception_matches_torch_fidelity_network(torch_fidelity_modules, tmp_path, monkeypatch):
  # torch-fidelity's whole feature extractor on the same (random) weights, shrunk to a 75x75
  # input (its class attribute) so that the test stays cheap: resize, normalisation, network.
  _, extractor = torch_fidelity_modules
  state_dict = _random_state_dict(seed=3)
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, tmp_path / "w.pth")
  monkeypatch.setattr(extractor.FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)
  net = extractor.FeatureExtractorInceptionV3(
      "inception-v3-compat", ["2048", "logits_unbiased"],
      feature_extractor_weights_path=str(tmp_path / "w.pth"))
  images = np.random.default_rng(2).integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
  with torch.no_grad():
    pool, logits = net(_nchw(images))
  feature_fn = inception.make_feature_fn(inception.params_from_torch(state_dict), batch_size=2,
                                         resize_to=75, protocol=fid_protocol.TORCH_FIDELITY)
  out = feature_fn(images)
  np.testing.assert_allclose(out["pool"], pool.numpy(), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out["logits_unbiased"], logits.numpy(), rtol=1e-4, atol=1e-3)


def test_resolve_protocol_and_stored_protocol(tmp_path, caplog):
  auto = fid_protocol.AUTO
  assert fid_protocol.resolve_protocol(auto, "/refs/jit_in256_stats.npz") == "torch_fidelity"
  assert fid_protocol.resolve_protocol(auto, "") == fid_protocol.DEFAULT_PROTOCOL
  assert fid_protocol.resolve_protocol(auto, "mine.npz", stored="pytorch_fid") == "pytorch_fid"
  with caplog.at_level("WARNING"):
    assert fid_protocol.resolve_protocol("pytorch_fid", "VIRTUAL_imagenet256_labeled.npz") == (
        "pytorch_fid")
  assert "not comparable" in caplog.text
  with pytest.raises(ValueError, match="choose from"):
    fid_protocol.resolve_protocol("tf1", "")
  # Our statistics carry their protocol; auto then picks it up.
  path = str(tmp_path / "stats.npz")
  reference.save_stats(path, np.zeros(4), np.eye(4), protocol="pytorch_fid")
  loaded = reference.load_reference(path)
  assert loaded["protocol"] == "pytorch_fid"
  assert fid_protocol.resolve_protocol(auto, path, loaded["protocol"]) == "pytorch_fid"
  reference.save_stats(path, np.zeros(4), np.eye(4))
  assert "protocol" not in reference.load_reference(path)
