"""The T2I/T2V forward benchmark at a tiny size: its table, its AOT mode, and (where an official
checkout is named by $GRN_REF) the official module on the same weights."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs import t2iv as t2iv_configs
from grn_jax.benchmarks import t2iv_forward

TINY = ["--variant=tiny", "--pixels=0.06M", "--text_len=8", "--repeats=1"]


def run(*args):
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "grn_jax.benchmarks.t2iv_forward", *args],
                        capture_output=True, text=True, env=env, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def test_grid_flops_and_depth_cut():
  assert t2iv_forward.sample_settings("t2i", None, None, None) == ("1M", 1.0, 0.0)
  assert t2iv_forward.sample_settings("t2v", None, 1.0, None) == ("0.41M", 1.0, 2.0)
  assert t2iv_forward.token_grid(*t2iv_forward.sample_settings("t2v", None, None, None)) == (
      9, 30, 53)
  assert t2iv_forward.token_grid("1M", 1.0, 0.0) == (1, 64, 64)
  assert t2iv_forward.token_grid("0.41M", 9 / 16, 5.0) == (21, 30, 53)
  cfg = t2iv_forward.model_config("2B", 4, "bfloat16")
  assert (cfg.depth, cfg.block_chunks, cfg.dtype) == (4, 4, "bfloat16")
  assert t2iv_forward.model_config("2B", 6, "float32").block_chunks == 6
  # GRN-2B at 4,096 + 1 visual and 512 text tokens: 2 FLOPs per block weight per token
  # (2,180,125,696 block params, 28 blocks) plus q k^T and p v (2 x 2 x N x M x 2304 per block).
  text, step = t2iv_forward.forward_flops(t2iv_configs.model_config("2B"), 4096, 512, 1)
  blocks = 2_180_125_696
  np.testing.assert_allclose(step, 2 * 4097 * blocks + 28 * 4 * 4097 * 4609 * 2304, rtol=0.01)
  np.testing.assert_allclose(text, 2 * 512 * blocks + 28 * 4 * 512 * 512 * 2304, rtol=0.03)


def test_table_at_tiny_size():
  out = run(*TINY)
  assert "grn_jax bfloat16 (jit)" in out and "grn_jax float32 (jit)" in out
  assert "1 x 16 x 16 visual + 8 text tokens" in out
  diffs = [float(line.rsplit("=", 1)[1]) for line in out.splitlines() if "max |logits" in line]
  assert diffs and max(diffs) < 0.05


def test_aot_memory_at_tiny_size():
  out = run("--variant=tiny", "--aot", "--pixels=0.41M", "--h_div_w=0.5625", "--duration=5",
            "--text_len=16", "--dtypes=float32")
  assert "21 x 30 x 53 = 33,390 visual" in out and "temp bytes" in out


@pytest.mark.skipif(not os.environ.get("GRN_REF"), reason="set GRN_REF to an official checkout")
def test_official_rows_agree_with_ours():
  pytest.importorskip("torch")
  out = run(*TINY, f"--official={os.environ['GRN_REF']}")
  rows = {line.split("=")[0].strip(): float(line.rsplit("=", 1)[1])
          for line in out.splitlines() if "max |logits" in line}
  assert "official bf16 autocast" in out and "official float32" in out
  assert rows["max |logits(float32) - reference|"] < 5e-3  # the official casts q/k/v to bf16
  assert np.isfinite(list(rows.values())).all()
