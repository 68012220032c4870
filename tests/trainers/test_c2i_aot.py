"""AOT: GRN-G's train step with FSDP fits a v5p-64 chip (95 GiB HBM), compiled on fake devices.

Mesh: 64 fake CPU devices, fsdp=64 (data=1), the official global batch 1024 (16 per chip),
bfloat16 compute, scanned blocks, no remat; abstract inputs only (jit(...).lower(...).compile()).
CPU buffer assignment stands in for TPU's; the margin (about 2x) covers the difference.
"""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V5P_HBM_BYTES = 95 * 2**30


def test_grn_g_fsdp_step_fits_v5p_64_memory():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=64",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  cmd = [sys.executable, "-m", "grn_jax.benchmarks.train_step", "--aot", "--variant=G",
         "--batch=1024", "--fsdp=64", "--dtype=bfloat16", "--scan"]
  out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  print(out.stdout)
  bytes_ = {m.group(1): int(m.group(2).replace(",", ""))
            for m in re.finditer(r"^\s+(\w+)\s+([\d,]+) bytes", out.stdout, re.M)}
  assert "16 per device" in out.stdout and "64 fake cpu devices" in out.stdout
  # Params + AdamW moments + 2 EMAs of 2.0B float32 parameters, sharded 64 ways.
  state_bytes = 5 * 4 * 2.0e9 / 64
  assert 0.9 * state_bytes < bytes_["arguments"] < 1.2 * state_bytes
  assert bytes_["aliased"] > 0.9 * bytes_["arguments"]  # donated state
  assert 0 < bytes_["total"] < V5P_HBM_BYTES
