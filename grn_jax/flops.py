"""Model FLOPs, the measured matmul peak and MFU, for the trainers and the benchmarks.

  flops.c2i_forward_flops_per_example(config.model)   matmul FLOPs of one C2I forward
  flops.c2i_train_flops_per_example(config.model)     3x that (forward + backward)
  flops.jaxpr_flops(fn, *abstract_args)               matmul + convolution FLOPs of any program
  flops.measure_matmul_peak_flops(2048, jnp.float32)  FLOP/s of a jitted n x n jnp.dot
  flops.run_peak_flops(peak_flops_per_device, dtype)  total peak of the devices of a run
  flops.mfu(examples_per_second, flops_per_example, peak_flops)

FLOPs count 2 per multiply-add. `python -m grn_jax.benchmarks.peak` prints the measured peak.
"""

import math
import time
from typing import Any, Callable

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import hbq
from grn_jax.models import layers


def c2i_forward_flops_per_example(model_cfg: ml_collections.ConfigDict) -> float:
  """Matmul FLOPs of one C2I forward pass of one example.

  Counts the embedding (bottleneck in and out), qkv / proj / SwiGLU, attention scores and
  values, and the output layer. Per-example adaLN and embedder matmuls are left out (<1%).
  """
  hidden, grid = model_cfg.hidden_size, model_cfg.input_size // model_cfg.patch_size
  tokens = grid * grid
  classes = hbq.num_classes(model_cfg.hbq_rounds, model_cfg.label_mode)
  dim = hbq.num_labels(model_cfg.latent_dim, model_cfg.hbq_rounds, model_cfg.label_mode)
  in_ch = classes * dim * model_cfg.patch_size**2
  mlp = layers.swiglu_hidden(hidden, model_cfg.mlp_ratio)
  macs = tokens * (in_ch * model_cfg.bottleneck_dim + model_cfg.bottleneck_dim * hidden
                   + hidden * in_ch)
  for i in range(model_cfg.depth):
    n = tokens + (model_cfg.in_context_len if (model_cfg.in_context_len > 0 and
                                               i >= model_cfg.in_context_start) else 0)
    # qkv (3 h^2) + proj (h^2) + SwiGLU (3 h mlp); q k^T and attn @ v (n^2 h each).
    macs += n * (4 * hidden * hidden + 3 * hidden * mlp) + 2 * n * n * hidden
  return 2.0 * macs


def c2i_train_flops_per_example(model_cfg: ml_collections.ConfigDict) -> float:
  """Model FLOPs of one C2I training example: forward + backward = 3x the forward."""
  return 3.0 * c2i_forward_flops_per_example(model_cfg)


def jaxpr_flops(fn: Callable[..., Any], *args: Any) -> float:
  """Matmul and convolution FLOPs of `fn(*args)` (2 per multiply-add), counted on its jaxpr.

  Unlike the compiler's cost analysis, which counts the body of a loop once, scan bodies count
  `length` times (lax.map, nn.scan over layers, streamed frame chunks, chunked attention), the
  larger branch of a `cond` counts. Trace it outside a mesh, where attention is plain XLA
  matmuls: a Pallas kernel or a shard_map body hides its FLOPs or counts them per shard, and
  a while_loop has no static trip count; each raises ValueError.

  Args:
    fn: the function (e.g. a model's apply).
    *args: its arguments; arrays or jax.ShapeDtypeStruct (nothing is computed).
  """
  return _eqns_flops(jax.make_jaxpr(fn)(*args).jaxpr)


def _eqns_flops(jaxpr) -> float:
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    elif name == "conv_general_dilated":
      rhs = eqn.invars[1].aval.shape
      out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(rhs) / out_features
    elif name == "scan":
      total += eqn.params["length"] * _eqns_flops(eqn.params["jaxpr"].jaxpr)
    elif name == "cond":
      total += max(_eqns_flops(branch.jaxpr) for branch in eqn.params["branches"])
    elif name in ("while", "pallas_call", "shard_map"):
      raise ValueError(f"jaxpr_flops cannot count a {name!r} (no static trip count, or FLOPs "
                       "per shard / inside a kernel); count the program outside a mesh and "
                       "its loop body separately.")
    else:  # jit, remat, custom_jvp / custom_vjp calls: their (forward) sub-jaxprs
      for sub in jax_core.jaxprs_in_params(eqn.params):
        total += _eqns_flops(sub)
  return total


def mfu(examples_per_second: float, flops_per_example: float, peak_flops: float) -> float:
  """Model FLOP utilisation; `peak_flops` is the total peak of the devices used (NaN if 0)."""
  if peak_flops <= 0 or not math.isfinite(examples_per_second):
    return float("nan")
  return examples_per_second * flops_per_example / peak_flops


def measure_matmul_peak_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 10,
                              device: jax.Device | None = None) -> float:
  """FLOP/s of a jitted n x n @ n x n jnp.dot on one device (best of `repeats` chains of 4).

  Args:
    n: matrix side (2048 -> 17.2 GFLOP per product).
    dtype: operand dtype (float32 on CPU; bfloat16 for accelerator MXU/tensor-core peaks).
    repeats: timed repetitions after one warm-up; the fastest one counts.
    device: where to run (default: the first local device).

  Returns:
    Achieved FLOP/s (2 n^3 per product).
  """
  device = device or jax.local_devices()[0]
  rng = np.random.default_rng(0)
  a = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
  b = jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device)
  chain = 4

  @jax.jit
  def products(a, b):
    # A dependent chain keeps the device busy without host round trips; scaling keeps it finite.
    x = a
    for _ in range(chain):
      x = jnp.dot(x, b, preferred_element_type=dtype) * jnp.asarray(1.0 / n, dtype)
    return x

  products(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    products(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return chain * 2.0 * n**3 / best


def run_peak_flops(peak_flops_per_device: float, dtype: str) -> float:
  """Total peak FLOP/s of the devices of this run, the denominator of MFU.

  Args:
    peak_flops_per_device: > 0 is taken as the per-device peak (e.g. the chip's spec sheet);
      0 measures the 2048^2 matmul peak of one local device (in `dtype`, float32 on CPU).
    dtype: the model's compute dtype name.

  Returns:
    The per-device peak times the device count. Fake CPU devices share the host's cores, so on
    CPU it is the per-host peak times the process count.
  """
  per_device = float(peak_flops_per_device)
  if per_device <= 0:
    measure_dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.dtype(dtype)
    per_device = measure_matmul_peak_flops(2048, measure_dtype)
  if jax.default_backend() == "cpu":
    return per_device * jax.process_count()
  return per_device * jax.device_count()
