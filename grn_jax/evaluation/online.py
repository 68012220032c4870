"""FID during training: N samples on the mesh, their features in the same jitted program.

  evaluator = OnlineEvaluator.from_config(config, family, decode_fn, decode_params, mesh)
  scalars = evaluator(params)   # e.g. {'eval/fid': 12.3, 'eval/inception_score': 80.1}

The training loop calls the task's evaluator every `config.train.eval_every_steps` and writes its
scalars to TensorBoard next to the sample grids (grn_jax/trainers/loop.py). Output i of the family
(sampling/generate.py; C2I: `config.eval.num_samples` images, the same number of every class) is
sampled with the key fold_in(key(config.sample.seed), i) at every evaluation, so the curve
follows the model, not the noise. One program samples a batch (tokenizer decode and uint8
included), and runs the feature network on it: compiled once, called N / batch_size times; only
the features come back to the host, where the statistics are taken in float64.

Feature networks (`config.eval.feature_net`):
  ''    the FID Inception (weights `config.eval.inception`, preprocessing `config.eval.protocol`,
        grn_jax/evaluation/fid_protocol.py) against the FID statistics `config.eval.reference`:
        eval/fid and eval/inception_score.
  PATH  an .npz MLP feature network, a one-hidden-layer ReLU classifier on greyscale pixels
        (`hidden_kernel` [S*S, F], `hidden_bias` [F], `out_kernel` [F, K], `out_bias` [K]) whose
        hidden activations are the features, against `config.eval.reference` statistics of the
        same features: eval/frechet_distance, and eval/accuracy (the argmax class is the one the
        sample was generated for). The digits demo writes one (grn_jax/demo/evaluate.py).
"""

import dataclasses
import functools
import os
import time
from typing import Any
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import linalg

from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.evaluation import fid_protocol
from grn_jax.evaluation import inception
from grn_jax.evaluation import metrics
from grn_jax.evaluation import reference as reference_lib
from grn_jax.sampling import generate
from grn_jax.sampling import refine

MLP_KEYS = ("hidden_kernel", "hidden_bias", "out_kernel", "out_bias")
IS_SPLITS = 10


@dataclasses.dataclass(frozen=True)
class InceptionFeatures:
  """uint8 images [B, H, W, 3] -> dict(features [B, 2048], logits [B, 1008] bias-free)."""
  protocol: str

  def __call__(self, params: Any, images: jax.Array) -> dict[str, jax.Array]:
    out = inception.FIDInceptionV3(protocol=self.protocol).apply({"params": params}, images)
    return dict(features=out["pool"], logits=out["logits_unbiased"])


@dataclasses.dataclass(frozen=True)
class MLPFeatures:
  """uint8 images [B, S, S, C] -> dict(features [B, F] hidden ReLU, logits [B, K])."""
  image_size: int

  def __call__(self, params: Any, images: jax.Array) -> dict[str, jax.Array]:
    if images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"the MLP feature network reads {self.image_size}x{self.image_size} "
                       f"images, the samples are {images.shape[1]}x{images.shape[2]}.")
    gray = jnp.mean(images.astype(jnp.float32) / 255.0, axis=-1).reshape(images.shape[0], -1)
    hidden = nn.relu(gray @ params["hidden_kernel"] + params["hidden_bias"])
    return dict(features=hidden, logits=hidden @ params["out_kernel"] + params["out_bias"])


def save_mlp_feature_net(path: str, hidden_kernel: np.ndarray, hidden_bias: np.ndarray,
                         out_kernel: np.ndarray, out_bias: np.ndarray) -> None:
  """Writes an MLP feature network file (shapes as in the module docstring)."""
  np.savez(path, hidden_kernel=hidden_kernel, hidden_bias=hidden_bias, out_kernel=out_kernel,
           out_bias=out_bias)


def load_mlp_feature_net(path: str) -> tuple[MLPFeatures, dict[str, np.ndarray]]:
  """(MLPFeatures, float32 params) of an MLP feature network file (errors name the file)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.eval.feature_net={path!r} does not exist: an .npz with "
                            f"{', '.join(MLP_KEYS)} (empty: the FID Inception).")
  with np.load(path) as data:
    missing = sorted(set(MLP_KEYS) - set(data.files))
    if missing:
      raise KeyError(f"{path} lacks {missing}; an MLP feature network holds {MLP_KEYS}.")
    params = {k: np.asarray(data[k], np.float32) for k in MLP_KEYS}
  pixels, hidden = params["hidden_kernel"].shape
  side = int(round(np.sqrt(pixels)))
  if (side * side != pixels or params["hidden_bias"].shape != (hidden,) or
      params["out_kernel"].shape[0] != hidden or
      params["out_bias"].shape != params["out_kernel"].shape[1:]):
    raise ValueError(f"{path}: inconsistent shapes {({k: v.shape for k, v in params.items()})}; "
                     "expected [S*S, F], [F], [F, K], [K].")
  return MLPFeatures(side), params


@functools.lru_cache(maxsize=8)
def _eval_program(rows_fn: Any, feature_net: Any):
  """jit(params, conditions, indices [B], base_key, settings, decode_params, feature_params)
  -> (features [B, F], logits [B, K]): the sampler, its decode and the feature network."""

  @jax.jit
  def run(params, conditions, indices, base_key, settings, decode_params, feature_params):
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)
    images = rows_fn(params, conditions, keys, settings, decode_params).images
    out = feature_net(feature_params, images)
    return out["features"], out["logits"]

  return run


class OnlineEvaluator:
  """Callable: params -> scalars of `family`'s outputs 0..N-1 under a feature network."""

  def __init__(self, family: generate.Family, decode_fn: Any, decode_params: Any,
               feature_net: Any, feature_params: Any, reference: dict[str, np.ndarray], *,
               batch_size: int, seed: int, mesh: jax.sharding.Mesh,
               class_labels: np.ndarray | None = None):
    """Args:
      family: the outputs to generate (sampling/generate.py Family).
      decode_fn, decode_params: the hashable tokenizer decode (images in [-1, 1]) and its params.
      feature_net: InceptionFeatures or MLPFeatures; feature_params its params.
      reference: dict(mu [F], sigma [F, F]) of the same features on real data.
      batch_size: rows per program call, divisible by the mesh's batch devices.
      seed: output i uses the key fold_in(key(seed), i).
      mesh: the device mesh.
      class_labels: int [N], the class of every output (MLP networks: eval/accuracy).
    """
    data_devices = int(np.prod([mesh.shape[a] for a in refine.BATCH_AXES if a in mesh.shape]))
    if batch_size % data_devices:
      raise ValueError(f"config.eval.batch_size={batch_size} must be divisible by the "
                       f"{data_devices} batch devices of the mesh {dict(mesh.shape)}.")
    self.family, self.mesh, self.batch_size = family, mesh, batch_size
    self.feature_net, self.reference, self.class_labels = feature_net, reference, class_labels
    self.run = _eval_program(family.rows_fn(tokenizer_io.Uint8Decode(decode_fn)), feature_net)
    self.base_key = jax.random.key(seed)
    self.decode_params = jax.device_put(decode_params, sharding.replicated(mesh))
    self.feature_params = jax.device_put(feature_params, sharding.replicated(mesh))

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, family: generate.Family,
                  decode_fn: Any, decode_params: Any, mesh: jax.sharding.Mesh,
                  class_labels: np.ndarray | None = None) -> "OnlineEvaluator":
    """The evaluator of config.eval (feature network, reference, batch) and config.sample.seed;
    reads the weights and the reference now, so a missing file fails before training."""
    eval_cfg = config.eval
    if not eval_cfg.reference:
      raise ValueError("config.train.eval_every_steps > 0 needs config.eval.reference: FID "
                       "statistics of real images (e.g. jit_in256_stats.npz, see "
                       "grn_jax/evaluation/reference.py; or write your own with `python -m "
                       "grn_jax.evaluation.fid --samples=REAL --save_stats=OUT.npz`).")
    reference = reference_lib.load_reference(eval_cfg.reference)
    if eval_cfg.feature_net:
      feature_net, feature_params = load_mlp_feature_net(eval_cfg.feature_net)
      reference.pop("protocol", None)
    else:
      protocol = fid_protocol.resolve_protocol(eval_cfg.protocol, eval_cfg.reference,
                                               reference.pop("protocol", None))
      feature_net = InceptionFeatures(protocol)
      feature_params = inception.load_params(eval_cfg.inception or None)
    return cls(family, decode_fn, decode_params, feature_net, feature_params, reference,
               batch_size=int(eval_cfg.batch_size), seed=int(config.sample.seed), mesh=mesh,
               class_labels=class_labels)

  def features(self, params: Any) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 [N, F], logits float32 [N, K]) of outputs 0..N-1 under `params`."""
    total, size = self.family.num_outputs, self.batch_size
    params = self.family.place_params(params, self.mesh)
    settings = self.family.settings.as_arrays()
    features, logits = [], []
    with jax.set_mesh(self.mesh):
      for first in range(0, total, size):
        indices = np.arange(first, first + size)
        valid = int(np.sum(indices < total))
        conditions = self.family.conditions(np.minimum(indices, total - 1))
        out = self.run(params, jax.tree.map(lambda x: generate.global_array(x, self.mesh),
                                            conditions),
                       generate.global_array(indices.astype(np.int32), self.mesh),
                       self.base_key, settings, self.decode_params, self.feature_params)
        batch_features, batch_logits = (generate.to_host(x)[:valid] for x in out)
        features.append(batch_features)
        logits.append(batch_logits)
    return np.concatenate(features), np.concatenate(logits)

  def __call__(self, params: Any) -> dict[str, float]:
    """The scalars of one evaluation (their names say the feature network), with its seconds."""
    start = time.perf_counter()
    features, logits = self.features(params)
    with warnings.catch_warnings():  # dead ReLU units of an MLP make the covariance singular
      warnings.simplefilter("ignore", linalg.LinAlgWarning)
      distance = metrics.frechet_distance(*metrics.feature_statistics(features),
                                          self.reference["mu"], self.reference["sigma"])
    if isinstance(self.feature_net, InceptionFeatures):
      score, _ = metrics.inception_score(logits, min(IS_SPLITS, len(logits)))
      out = {"eval/fid": distance, "eval/inception_score": score}
    else:
      out = {"eval/frechet_distance": distance}
      if self.class_labels is not None:
        out["eval/accuracy"] = float(np.mean(np.argmax(logits, axis=-1) == self.class_labels))
    out["eval/num_samples"] = len(features)
    out["eval/seconds"] = time.perf_counter() - start
    return out
