r"""The FID Inception-v3 (TF 2015-12-05 graph, as ported by pytorch-fid) in Flax, and its weights.

The network of pytorch-fid's `InceptionV3(use_fid_inception=True)` and of torch-fidelity's
`inception-v3-compat`: images are resized to 299x299 and normalised by one of the two FID
protocols (grn_jax/evaluation/fid_protocol.py: `torch_fidelity`, the official GRN evaluation's
and the default, or `pytorch_fid`), then run through Inception-v3 whose Mixed_5*/6b-e/7b/7c
blocks are the FID variants (average pools that do not count the zero padding; max pool in
Mixed_7c). Outputs: the 2048-d average-pool features (FID, precision/recall) and the 1008-class
logits of the final fc layer, with and without its bias; the Inception Score uses the bias-free
logits, as the original IS code and torch-fidelity do.

Weights: pytorch-fid's release file
  wget https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth \
      -P ~/.cache/grn_jax/
converted once (needs torch) to a .npz that is read without torch afterwards:
  python -m grn_jax.evaluation.inception --pth=~/.cache/grn_jax/pt_inception-2015-12-05-6726825d.pth
torch-fidelity's file of the same graph (weights-inception-2015-12-05-6726825d.pth) has the same
keys and converts the same way.
"""

import os
from typing import Any, Iterable

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grn_jax.convert import common
from grn_jax.evaluation import fid_protocol

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d"
WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
               f"{WEIGHTS_NAME}.pth")
DEFAULT_DIR = os.path.join("~", ".cache", "grn_jax")
WEIGHTS_ENV = "GRN_JAX_INCEPTION"
NUM_LOGITS = 1008
FEATURE_DIM = 2048
BN_EPS = 1e-3

# One conv (+ batch norm + ReLU) of a block: (name, out channels, kernel (kh, kw), stride,
# padding (ph, pw)). Names follow torchvision's Inception3 so the state dict maps one to one.
_A = lambda pool: [("branch1x1", 64, (1, 1), 1, (0, 0)), ("branch5x5_1", 48, (1, 1), 1, (0, 0)),
                   ("branch5x5_2", 64, (5, 5), 1, (2, 2)),
                   ("branch3x3dbl_1", 64, (1, 1), 1, (0, 0)),
                   ("branch3x3dbl_2", 96, (3, 3), 1, (1, 1)),
                   ("branch3x3dbl_3", 96, (3, 3), 1, (1, 1)),
                   ("branch_pool", pool, (1, 1), 1, (0, 0))]
_B = [("branch3x3", 384, (3, 3), 2, (0, 0)), ("branch3x3dbl_1", 64, (1, 1), 1, (0, 0)),
      ("branch3x3dbl_2", 96, (3, 3), 1, (1, 1)), ("branch3x3dbl_3", 96, (3, 3), 2, (0, 0))]
_C = lambda c7: [("branch1x1", 192, (1, 1), 1, (0, 0)), ("branch7x7_1", c7, (1, 1), 1, (0, 0)),
                 ("branch7x7_2", c7, (1, 7), 1, (0, 3)), ("branch7x7_3", 192, (7, 1), 1, (3, 0)),
                 ("branch7x7dbl_1", c7, (1, 1), 1, (0, 0)),
                 ("branch7x7dbl_2", c7, (7, 1), 1, (3, 0)),
                 ("branch7x7dbl_3", c7, (1, 7), 1, (0, 3)),
                 ("branch7x7dbl_4", c7, (7, 1), 1, (3, 0)),
                 ("branch7x7dbl_5", 192, (1, 7), 1, (0, 3)),
                 ("branch_pool", 192, (1, 1), 1, (0, 0))]
_D = [("branch3x3_1", 192, (1, 1), 1, (0, 0)), ("branch3x3_2", 320, (3, 3), 2, (0, 0)),
      ("branch7x7x3_1", 192, (1, 1), 1, (0, 0)), ("branch7x7x3_2", 192, (1, 7), 1, (0, 3)),
      ("branch7x7x3_3", 192, (7, 1), 1, (3, 0)), ("branch7x7x3_4", 192, (3, 3), 2, (0, 0))]
_E = [("branch1x1", 320, (1, 1), 1, (0, 0)), ("branch3x3_1", 384, (1, 1), 1, (0, 0)),
      ("branch3x3_2a", 384, (1, 3), 1, (0, 1)), ("branch3x3_2b", 384, (3, 1), 1, (1, 0)),
      ("branch3x3dbl_1", 448, (1, 1), 1, (0, 0)), ("branch3x3dbl_2", 384, (3, 3), 1, (1, 1)),
      ("branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)), ("branch3x3dbl_3b", 384, (3, 1), 1, (1, 0)),
      ("branch_pool", 192, (1, 1), 1, (0, 0))]

# (block name, kind, in channels, convs). Stem convs are blocks of kind 'conv' with one entry.
ARCHITECTURE = (
    ("Conv2d_1a_3x3", "conv", 3, [("", 32, (3, 3), 2, (0, 0))]),
    ("Conv2d_2a_3x3", "conv", 32, [("", 32, (3, 3), 1, (0, 0))]),
    ("Conv2d_2b_3x3", "conv", 32, [("", 64, (3, 3), 1, (1, 1))]),
    ("maxpool1", "maxpool", 64, []),
    ("Conv2d_3b_1x1", "conv", 64, [("", 80, (1, 1), 1, (0, 0))]),
    ("Conv2d_4a_3x3", "conv", 80, [("", 192, (3, 3), 1, (0, 0))]),
    ("maxpool2", "maxpool", 192, []),
    ("Mixed_5b", "A", 192, _A(32)),
    ("Mixed_5c", "A", 256, _A(64)),
    ("Mixed_5d", "A", 288, _A(64)),
    ("Mixed_6a", "B", 288, _B),
    ("Mixed_6b", "C", 768, _C(128)),
    ("Mixed_6c", "C", 768, _C(160)),
    ("Mixed_6d", "C", 768, _C(160)),
    ("Mixed_6e", "C", 768, _C(192)),
    ("Mixed_7a", "D", 768, _D),
    ("Mixed_7b", "E_avg", 1280, _E),
    ("Mixed_7c", "E_max", 2048, _E),
)

# Inputs of each conv inside a block: the block input unless listed here.
_CONV_INPUT = {
    "branch5x5_2": "branch5x5_1", "branch3x3dbl_2": "branch3x3dbl_1",
    "branch3x3dbl_3": "branch3x3dbl_2", "branch7x7_2": "branch7x7_1",
    "branch7x7_3": "branch7x7_2", "branch7x7dbl_2": "branch7x7dbl_1",
    "branch7x7dbl_3": "branch7x7dbl_2", "branch7x7dbl_4": "branch7x7dbl_3",
    "branch7x7dbl_5": "branch7x7dbl_4", "branch3x3_2": "branch3x3_1",
    "branch7x7x3_2": "branch7x7x3_1", "branch7x7x3_3": "branch7x7x3_2",
    "branch7x7x3_4": "branch7x7x3_3", "branch3x3_2a": "branch3x3_1",
    "branch3x3_2b": "branch3x3_1", "branch3x3dbl_3a": "branch3x3dbl_2",
    "branch3x3dbl_3b": "branch3x3dbl_2",
}


def _conv_in_channels(block_in: int, convs, name: str) -> int:
  source = _CONV_INPUT.get(name)
  if source is None:
    return block_in
  return {c[0]: c[1] for c in convs}[source]


class BasicConv(nn.Module):
  """Conv (no bias) + batch norm (inference statistics, eps 1e-3) + ReLU. NHWC."""
  features: int
  kernel_size: tuple[int, int]
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (*self.kernel_size, x.shape[-1], self.features))
    scale = self.param("scale", nn.initializers.ones, (self.features,))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    mean = self.param("mean", nn.initializers.zeros, (self.features,))
    var = self.param("var", nn.initializers.ones, (self.features,))
    (ph, pw) = self.padding
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    y = (y - mean) * (scale * jax.lax.rsqrt(var + BN_EPS)) + bias
    return nn.relu(y)


def _avg_pool_no_pad_count(x):
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_same(x):
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_down(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionBlock(nn.Module):
  """One Mixed_* block (kinds A, B, C, D, E_avg, E_max of the FID network)."""
  kind: str
  convs: tuple
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, x):
    out = {}
    for name, features, kernel, stride, padding in self.convs:
      source = _CONV_INPUT.get(name)
      inp = x if source is None else out[source]
      if name == "branch_pool":
        inp = _max_pool_same(x) if self.kind == "E_max" else _avg_pool_no_pad_count(x)
      out[name] = BasicConv(features, kernel, stride, padding, self.precision, name=name)(inp)
    if self.kind == "A":
      parts = ["branch1x1", "branch5x5_2", "branch3x3dbl_3", "branch_pool"]
    elif self.kind == "B":
      parts = ["branch3x3", "branch3x3dbl_3"]
    elif self.kind == "C":
      parts = ["branch1x1", "branch7x7_3", "branch7x7dbl_5", "branch_pool"]
    elif self.kind == "D":
      parts = ["branch3x3_2", "branch7x7x3_4"]
    else:
      parts = ["branch1x1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_3a",
               "branch3x3dbl_3b", "branch_pool"]
    tensors = [out[p] for p in parts]
    if self.kind in ("B", "D"):
      tensors.append(_max_pool_down(x))
    return jnp.concatenate(tensors, axis=-1)


class FIDInceptionV3(nn.Module):
  """images -> dict(pool float32 [B, 2048], logits / logits_unbiased float32 [B, 1008]).

  `protocol` is the FID preprocessing (fid_protocol.PROTOCOLS). resize_to=0 skips the resize
  (tests run the random-weight network on small inputs; at least 75x75 pixels).
  """
  resize_to: int = fid_protocol.INPUT_SIZE
  protocol: str = fid_protocol.DEFAULT_PROTOCOL
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images):
    x = fid_protocol.preprocess(images, self.resize_to, self.protocol)
    for name, kind, _, convs in ARCHITECTURE:
      if kind == "maxpool":
        x = _max_pool_down(x)
      elif kind == "conv":
        (_, features, kernel, stride, padding), = convs
        x = BasicConv(features, kernel, stride, padding, self.precision, name=name)(x)
      else:
        x = InceptionBlock(kind, tuple(convs), self.precision, name=name)(x)
    pool = jnp.mean(x, axis=(1, 2))
    kernel = self.param("fc_kernel", nn.initializers.lecun_normal(), (FEATURE_DIM, NUM_LOGITS))
    bias = self.param("fc_bias", nn.initializers.zeros, (NUM_LOGITS,))
    unbiased = jnp.dot(pool, kernel, precision=self.precision)
    return dict(pool=pool, logits=unbiased + bias, logits_unbiased=unbiased)


# ------------------------------------------------------------------------------------------------
# Weights.


def torch_state_dict_shapes() -> dict[str, tuple[int, ...]]:
  """Every key of pytorch-fid's FID Inception state dict and its PyTorch shape."""
  shapes = {}
  for block, kind, cin, convs in ARCHITECTURE:
    for name, features, kernel, _, _ in convs:
      prefix = f"{block}." + (f"{name}." if name else "")
      fan_in = cin if kind == "conv" else _conv_in_channels(cin, convs, name)
      shapes[prefix + "conv.weight"] = (features, fan_in, *kernel)
      for stat in ("weight", "bias", "running_mean", "running_var"):
        shapes[prefix + f"bn.{stat}"] = (features,)
  shapes["fc.weight"] = (NUM_LOGITS, FEATURE_DIM)
  shapes["fc.bias"] = (NUM_LOGITS,)
  return shapes


def params_from_torch(state_dict: dict[str, np.ndarray]) -> dict[str, Any]:
  """pytorch-fid state dict {key: array} -> Flax params of FIDInceptionV3 (float32 numpy).

  `num_batches_tracked` counters are ignored; any other missing, unexpected or mis-shaped key is
  reported (all at once) by a CheckpointMismatchError.
  """
  state_dict = {k: v for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  mapper = common.KeyMapper(state_dict, context="pytorch-fid Inception-v3")
  shapes = torch_state_dict_shapes()
  params: dict[str, Any] = {}
  names = {"conv.weight": "kernel", "bn.weight": "scale", "bn.bias": "bias",
           "bn.running_mean": "mean", "bn.running_var": "var"}
  for key, shape in shapes.items():
    if key.startswith("fc."):
      continue
    path, leaf = key.rsplit(".", 2)[0], ".".join(key.rsplit(".", 2)[1:])
    transform = (lambda w: w.transpose(2, 3, 1, 0)) if leaf == "conv.weight" else (lambda w: w)
    value = mapper.take(key, shape, transform)
    if value is not None:
      common.set_in(params, (*path.split("."), names[leaf]), np.ascontiguousarray(value))
  kernel = mapper.take("fc.weight", shapes["fc.weight"], lambda w: w.T)
  bias = mapper.take("fc.bias", shapes["fc.bias"])
  mapper.finish()
  params["fc_kernel"] = np.ascontiguousarray(kernel)
  params["fc_bias"] = bias
  return params


def params_to_torch(params: dict[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `params_from_torch` (for round-trip tests and parity checks)."""
  out = {}
  for key in torch_state_dict_shapes():
    if key.startswith("fc."):
      continue
    path, leaf = key.rsplit(".", 2)[0], ".".join(key.rsplit(".", 2)[1:])
    node = params
    for part in path.split("."):
      node = node[part]
    value = np.asarray(node[{"conv.weight": "kernel", "bn.weight": "scale", "bn.bias": "bias",
                             "bn.running_mean": "mean", "bn.running_var": "var"}[leaf]])
    out[key] = value.transpose(3, 2, 0, 1) if leaf == "conv.weight" else value
  out["fc.weight"] = np.asarray(params["fc_kernel"]).T
  out["fc.bias"] = np.asarray(params["fc_bias"])
  return out


def _flatten(tree, prefix=""):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", v


def save_npz(params: dict[str, Any], path: str) -> None:
  """Writes params as a flat .npz ('Mixed_5b/branch1x1/kernel', ...) readable without torch."""
  path = os.path.expanduser(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + f".tmp-{os.getpid()}.npz"
  np.savez(tmp, **{k: np.asarray(v, np.float32) for k, v in _flatten(params)})
  os.replace(tmp, path)


def load_npz(path: str) -> dict[str, Any]:
  """Reads `save_npz` output and checks it holds exactly the network's parameters."""
  with np.load(os.path.expanduser(path)) as data:
    flat = {k: data[k] for k in data.files}
  expected = {k: tuple(v.shape) for k, v in _flatten(_abstract_params())}
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  misshaped = [(k, flat[k].shape, expected[k]) for k in expected
               if k in flat and flat[k].shape != expected[k]]
  if missing or unexpected or misshaped:
    raise common.CheckpointMismatchError(missing, unexpected, misshaped,
                                         f"Inception params file {path}")
  params: dict[str, Any] = {}
  for key, value in flat.items():
    common.set_in(params, tuple(key.split("/")), value.astype(np.float32))
  return params


def _abstract_params():
  shapes = jax.eval_shape(lambda: FIDInceptionV3(resize_to=0).init(
      jax.random.key(0), jnp.zeros((1, 75, 75, 3), jnp.uint8)))
  return shapes["params"]


def default_weights_path() -> str:
  """$GRN_JAX_INCEPTION, else ~/.cache/grn_jax/pt_inception-2015-12-05-6726825d.npz (or .pth)."""
  if os.environ.get(WEIGHTS_ENV):
    return os.environ[WEIGHTS_ENV]
  base = os.path.join(os.path.expanduser(DEFAULT_DIR), WEIGHTS_NAME)
  return base + ".npz" if os.path.exists(base + ".npz") else base + ".pth"


def weights_available(path: str | None = None) -> bool:
  path = os.path.expanduser(path or default_weights_path())
  return os.path.exists(path) or os.path.exists(os.path.splitext(path)[0] + ".npz")


def load_params(path: str | None = None, cache_npz: bool = True) -> dict[str, Any]:
  """FID Inception params from a converted .npz, or pytorch-fid's .pth (needs torch).

  Args:
    path: the .npz or .pth; default `default_weights_path()`. A .npz beside a requested .pth
      (same name) is used first.
    cache_npz: after converting a .pth, write the .npz beside it so later runs need no torch.
  """
  path = os.path.expanduser(path or default_weights_path())
  npz = os.path.splitext(path)[0] + ".npz"
  if os.path.exists(npz):
    return load_npz(npz)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"FID Inception weights not found at {path}. Download pytorch-fid's weights:\n"
        f"  mkdir -p {os.path.dirname(path)} && wget {WEIGHTS_URL} -P {os.path.dirname(path)}\n"
        "then convert them once (needs torch: pip install 'grn_jax[torch]'):\n"
        f"  python -m grn_jax.evaluation.inception --pth={os.path.splitext(path)[0]}.pth\n"
        f"or point ${WEIGHTS_ENV} / --inception at an existing .pth or converted .npz.")
  if not path.endswith((".pth", ".pt")):
    raise ValueError(f"{path}: expected a .npz (converted) or .pth (pytorch-fid) file.")
  state_dict = common.load_torch_checkpoint(path)
  params = params_from_torch(state_dict)
  if cache_npz:
    try:
      save_npz(params, npz)
    except OSError:
      pass  # read-only location: convert again next time.
  return params


def make_feature_fn(params, batch_size: int, resize_to: int = fid_protocol.INPUT_SIZE,
                    protocol: str = fid_protocol.DEFAULT_PROTOCOL):
  """Returns features(images uint8 [N, H, W, 3]) -> dict of numpy arrays (see FIDInceptionV3).

  Runs one jitted forward pass per batch of `batch_size` (the last batch is padded, so it
  compiles once per image size); `protocol` is the FID preprocessing (fid_protocol.py).
  """
  module = FIDInceptionV3(resize_to=resize_to, protocol=protocol)
  params = jax.device_put(params)
  forward = jax.jit(lambda p, x: module.apply({"params": p}, x))

  def features(images: np.ndarray | Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    outs: dict[str, list[np.ndarray]] = {}
    for batch in _batches(images, batch_size):
      n = len(batch)
      if n < batch_size:
        batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]),
                                                batch.dtype)])
      result = forward(params, batch)
      for k, v in result.items():
        outs.setdefault(k, []).append(np.asarray(v[:n]))
    if not outs:
      raise ValueError("no images to compute Inception features of.")
    return {k: np.concatenate(v) for k, v in outs.items()}

  return features


def _batches(images, batch_size: int):
  if isinstance(images, np.ndarray):
    for i in range(0, len(images), batch_size):
      yield images[i:i + batch_size]
    return
  buf = []
  for image in images:
    buf.append(np.asarray(image))
    if len(buf) == batch_size:
      yield np.stack(buf)
      buf = []
  if buf:
    yield np.stack(buf)


def main(argv):
  del argv
  pth = os.path.expanduser(flags.FLAGS.pth)
  out = flags.FLAGS.npz or os.path.splitext(pth)[0] + ".npz"
  params = params_from_torch(common.load_torch_checkpoint(pth))
  save_npz(params, out)
  print(f"wrote {out}")


if __name__ == "__main__":
  flags.DEFINE_string("pth", os.path.join(DEFAULT_DIR, WEIGHTS_NAME + ".pth"),
                      "pytorch-fid weights file.")
  flags.DEFINE_string("npz", "", "Output .npz (default: beside the .pth).")
  app.run(main)
