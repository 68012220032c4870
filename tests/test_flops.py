"""Model FLOPs, MFU and the matmul-peak measurement (grn_jax/flops.py)."""

import math

import jax
import jax.numpy as jnp
import pytest

from configs import c2i as c2i_configs
from grn_jax import flops


def test_train_flops_per_example_matches_hand_count():
  cfg = c2i_configs.get_config("variant=B").model
  # 256 tokens (288 after the 4th block), hidden 768, SwiGLU 2048, 256 one-hot channels.
  macs = 256 * (256 * 128 + 128 * 768 + 768 * 256)
  for i in range(12):
    n = 256 + (32 if i >= 4 else 0)
    macs += n * (4 * 768 * 768 + 3 * 768 * 2048) + 2 * n * n * 768
  assert flops.c2i_train_flops_per_example(cfg) == 6 * macs


def test_forward_flops_hand_count_and_mfu():
  cfg = c2i_configs.model_config("tiny")
  # 16 tokens (20 from block 1 on: 4 class tokens), hidden 64, bottleneck 16, SwiGLU
  # int(256 * 2 / 3) = 170, one-hot channels 16 classes x 4 labels = 64.
  macs = 16 * (64 * 16 + 16 * 64 + 64 * 64)
  for n in (16, 20):
    macs += n * (4 * 64 * 64 + 3 * 64 * 170) + 2 * n * n * 64
  forward = flops.c2i_forward_flops_per_example(cfg)
  assert forward == 2 * macs
  assert flops.c2i_train_flops_per_example(cfg) == 3 * forward
  assert flops.mfu(10.0, forward, 40.0 * forward) == pytest.approx(0.25)
  assert math.isnan(flops.mfu(10.0, forward, 0.0))
  assert math.isnan(flops.mfu(float("inf"), forward, 1e12))


def test_peak_flops_measured_or_given():
  measured = flops.measure_matmul_peak_flops(64, jnp.float32, repeats=2)
  assert math.isfinite(measured) and measured > 1e6  # any CPU does a 64^2 matmul at > 1 MFLOP/s
  # A given per-device peak is used as is; fake CPU devices share one host: x process count.
  assert jax.default_backend() == "cpu"
  assert flops.run_peak_flops(1e11, "bfloat16") == 1e11 * jax.process_count()


def test_jaxpr_flops_counts_matmuls_convolutions_and_scan_bodies_times_their_length():
  a = jax.ShapeDtypeStruct((8, 16), jnp.float32)
  w = jax.ShapeDtypeStruct((16, 32), jnp.float32)
  assert flops.jaxpr_flops(jnp.dot, a, w) == 2 * 8 * 16 * 32

  def scanned(x, ws):  # 5 layers of [16, 16]
    return jax.lax.scan(lambda h, wi: (h @ wi, None), x, ws)[0]
  assert flops.jaxpr_flops(scanned, a, jax.ShapeDtypeStruct((5, 16, 16), jnp.float32)) == (
      5 * 2 * 8 * 16 * 16)

  images = jax.ShapeDtypeStruct((2, 3, 10, 10), jnp.float32)   # NCHW
  kernel = jax.ShapeDtypeStruct((4, 3, 3, 3), jnp.float32)     # OIHW, 'SAME'
  conv = lambda x, k: jax.lax.conv(x, k, (1, 1), "SAME")
  assert flops.jaxpr_flops(conv, images, kernel) == 2 * (2 * 4 * 10 * 10) * (3 * 3 * 3)

  loop = lambda x: jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ c[0], c[1] + 1),
                                      (x, 0))[0]
  with pytest.raises(ValueError, match="while"):
    flops.jaxpr_flops(loop, jax.ShapeDtypeStruct((4, 4), jnp.float32))
