"""FID during training (grn_jax/evaluation/online.py): the in-program features are those of the
images `generate` writes for the same indices and seed, the scalars are the numpy Frechet
distance and accuracy of them, deterministic; config errors name the field."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import models
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.evaluation import metrics
from grn_jax.evaluation import online
from grn_jax.evaluation import reference
from grn_jax.sampling import c2i as c2i_sampling
from grn_jax.convert import tokenizer as tokenizer_convert
from grn_jax.sampling import generate
from tests.convert import test_tokenizer as tokenizer_helpers

BATCH = 8  # the 8 fake devices


def _config(tmp_path, image_size):
  config = c2i_configs.get_config("variant=tiny")
  config.sample.update(num_steps=2, per_class=1, num_images=-1, batch_size=BATCH)
  rng = np.random.default_rng(0)
  hidden, classes = 6, int(config.model.num_classes)
  online.save_mlp_feature_net(str(tmp_path / "mlp.npz"),
                              rng.normal(size=(image_size**2, hidden)) * 0.05,
                              rng.normal(size=hidden), rng.normal(size=(hidden, classes)),
                              rng.normal(size=classes))
  reference.save_stats(str(tmp_path / "ref.npz"), rng.normal(size=hidden), np.eye(hidden))
  config.eval.update(feature_net=str(tmp_path / "mlp.npz"), reference=str(tmp_path / "ref.npz"),
                     batch_size=BATCH)
  return config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp("online")
  config = c2i_configs.get_config("variant=tiny")
  image_size = int(config.data.image_size)
  config = _config(tmp_path, image_size)
  family = c2i_sampling.C2IGeneration(config)   # one image of every class
  # Random tokenizer weights in the official layout (cheaper than a jitted random init).
  state_dict = tokenizer_helpers.random_state_dict(config.tokenizer)
  tok_params = tokenizer_convert.tokenizer_params_from_torch(
      {k: 0.2 * v for k, v in state_dict.items()}, config.tokenizer)
  decode = tokenizer_io.TokenizerDecode(models.build_tokenizer(config.tokenizer))
  mesh = sharding.make_mesh(config.mesh)
  evaluator = online.OnlineEvaluator.from_config(config, family, decode, tok_params, mesh,
                                                 class_labels=family.class_labels)
  size = config.model.input_size
  params = jax.jit(lambda: c2i_sampling.model_apply(config).module.init(
      jax.random.key(1), np.zeros((1, size, size, family.spec.label_shape[-1]), np.int32),
      np.zeros((1,)), np.zeros((1,), np.int32)))()
  params = nn.unbox(params)["params"]
  return config, family, decode, tok_params, mesh, evaluator, params, tmp_path


def test_features_are_those_of_the_generated_images(setup):
  config, family, decode, tok_params, mesh, evaluator, params, tmp_path = setup
  features, logits = evaluator.features(params)
  assert features.shape == (family.num_outputs, 6)
  out_dir = str(tmp_path / "generated")
  generate.generate(family, params, decode, tok_params, out_dir, batch_size=BATCH,
                    seed=int(config.sample.seed), mesh=mesh, show_progress=False)
  images = np.stack([generate.read_png(generate.png_path(out_dir, i))[0]
                     for i in range(family.num_outputs)])
  net, net_params = online.load_mlp_feature_net(config.eval.feature_net)
  gray = images.astype(np.float64).mean(-1).reshape(len(images), -1) / 255.0
  hidden = np.maximum(gray @ net_params["hidden_kernel"] + net_params["hidden_bias"], 0.0)
  np.testing.assert_allclose(features, hidden, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits, hidden @ net_params["out_kernel"] + net_params["out_bias"],
                             rtol=1e-4, atol=1e-4)
  assert net.image_size == images.shape[1]
  # The scalars: the float64 Frechet distance to the reference and the accuracy, repeatable.
  scalars = evaluator(params)
  ref = reference.load_reference(config.eval.reference)
  expected = metrics.frechet_distance(*metrics.feature_statistics(hidden), ref["mu"],
                                      ref["sigma"])
  np.testing.assert_allclose(scalars["eval/frechet_distance"], expected, rtol=1e-4)
  predicted = np.argmax(hidden @ net_params["out_kernel"] + net_params["out_bias"], -1)
  assert scalars["eval/accuracy"] == np.mean(predicted == family.class_labels)
  assert scalars["eval/num_samples"] == family.num_outputs
  assert evaluator(params)["eval/frechet_distance"] == scalars["eval/frechet_distance"]


def test_config_errors_name_the_field(setup, tmp_path):
  config, family, decode, tok_params, mesh, _, _, _ = setup
  build = lambda cfg: online.OnlineEvaluator.from_config(cfg, family, decode, tok_params, mesh)
  bad = _config(tmp_path, 4)
  bad.eval.reference = ""
  with pytest.raises(ValueError, match="needs config.eval.reference"):
    build(bad)
  bad = _config(tmp_path, 4)
  bad.eval.feature_net = str(tmp_path / "missing.npz")
  with pytest.raises(FileNotFoundError, match="config.eval.feature_net="):
    build(bad)
  np.savez(tmp_path / "broken.npz", hidden_kernel=np.zeros((15, 3)), hidden_bias=np.zeros(3),
           out_kernel=np.zeros((3, 2)), out_bias=np.zeros(2))
  bad.eval.feature_net = str(tmp_path / "broken.npz")
  with pytest.raises(ValueError, match="inconsistent shapes"):
    build(bad)
  bad = _config(tmp_path, 4)
  bad.eval.batch_size = 12
  with pytest.raises(ValueError, match="config.eval.batch_size=12 must be divisible"):
    build(bad)
  # A 4x4 network cannot read the 64x64 samples: said when the program is traced.
  small = online.OnlineEvaluator.from_config(_config(tmp_path, 4), family, decode, tok_params,
                                             mesh)
  with pytest.raises(ValueError, match="reads 4x4 images"):
    small.features(setup[6])
  del config
