r"""C2I train-step speed next to the measured matmul peak of the machine.

  python -m grn_jax.benchmarks.train_step                      # GRN-B: batch 8 fp32 on CPU,
                                                               # batch 256 bf16 on an accelerator
  python -m grn_jax.benchmarks.train_step --official=/work/ref # + the official PyTorch step

Memory of pod-sized steps: `python -m grn_jax.aot` (compiled by the TPU compiler for a real TPU
topology, on this host) and its table, `python -m grn_jax.benchmarks.aot_table`.

The step is THE training step of the loop (grn_jax.trainers.loop.build_program: corruption,
forward, backward, clipping, AdamW, two EMAs, the metrics; compiled once, state and metrics
donated) on one device, synthetic labels, random weights. MFU = model FLOP/s (3x forward matmul
FLOPs, `grn_jax.flops.c2i_train_flops_per_example`) over the measured 2048^2 jnp.dot peak of the
same device.
"""

import os
import sys
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import c2i as c2i_configs
from grn_jax import flops
from grn_jax import hbq
from grn_jax import sharding
from grn_jax.benchmarks import official
from grn_jax.benchmarks import timing
from grn_jax.data import pipeline
from grn_jax.trainers import loop

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  timing.define_common_flags(
      batch=0, batch_help="Batch (0: 8 on CPU, 256 on accelerators).", dtype="",
      dtype_help="Compute dtype (default float32 on CPU, bfloat16 otherwise).", repeats=3,
      repeats_name="steps")
  flags.DEFINE_string("remat", "none", "Model remat policy.")
  flags.DEFINE_bool("scan", False, "nn.scan over blocks.")
  flags.DEFINE_bool("malloc_hugepages", True,
                    "Re-run with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (CPU): XLA's per-step "
                    "temporary buffers are mmap'ed afresh each step, and 4 KiB pages cost ~1M "
                    "page faults per GRN-B step (~18% of the step); transparent huge pages avoid "
                    "them.")


def bench_config(variant: str, batch: int, dtype: str, remat: str = "none", scan: bool = False):
  config = c2i_configs.get_config(f"variant={variant}")
  config.data.source = "synthetic"   # labels are fed directly (no online tokenizer)
  config.train.global_batch_size = batch
  config.model.update(dtype=dtype, remat_policy=remat, scan_layers=scan)
  config.mesh.update(data=-1, fsdp=1, tensor=1)
  return config


def time_ours(config, steps: int) -> tuple[float, float]:
  """(fastest seconds per step, compile + first step seconds) on one device."""
  device = jax.local_devices()[0]
  mesh = sharding.make_mesh(config.mesh, [device])
  start = time.perf_counter()
  program = loop.build_program(config, mesh)
  step_fn = program.compile()
  state, metrics = program.init(), program.empty_metrics()
  h, w, d = pipeline.label_shape(config.model)
  rng = np.random.default_rng(0)
  k = hbq.num_classes(config.model.hbq_rounds, config.model.label_mode)
  batch = program.task.make_prepare(mesh, program.batch_shardings)(
      {"labels": rng.integers(0, k, (config.train.global_batch_size, h, w, d), dtype=np.int32),
       "class_labels": rng.integers(0, config.model.num_classes, config.train.global_batch_size,
                                    dtype=np.int32)})
  carry = [state, metrics]

  def step():
    carry[:] = step_fn(carry[0], batch, carry[1])
    return carry

  setup_s = time.perf_counter() - start
  seconds, first_s, _ = timing.best_of(step, steps)
  return seconds, setup_s + first_s


def time_official(repo: str, config, steps: int, variant: str) -> float:
  """Median seconds of the official Denoiser train step (forward, CE, backward, clip, AdamW,
  EMA update) in fp32 eager PyTorch on CPU."""
  denoiser = official.import_official(repo, "grn.utils_c2i.denoiser")
  import torch  # pylint: disable=g-import-not-at-top
  m = config.model
  args = types.SimpleNamespace(
      model=f"GRN_{variant}", img_size=16 * m.input_size, in_channels=256,
      class_num=m.num_classes, attn_dropout=0.0, proj_dropout=0.0, label_drop_prob=0.1,
      P_mean=config.corruption.keep_logit_mean, P_std=config.corruption.keep_logit_std,
      t_eps=5e-2, noise_scale=1.0,
      ema_decay1=0.9999, ema_decay2=0.9996, sampling_method="euler", num_sampling_steps=50,
      cfg=1.0, interval_min=0.0, interval_max=1.0, method="GRN_ind", hbq_round=m.hbq_rounds)
  model = denoiser.Denoiser(args).train()
  model.ema_params1 = [p.detach().clone() for p in model.parameters()]
  model.ema_params2 = [p.detach().clone() for p in model.parameters()]
  optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.95))
  b = config.train.global_batch_size
  x = torch.randint(0, 16, (b, m.latent_dim, m.input_size, m.input_size))
  y = torch.randint(0, m.num_classes, (b,))

  def step():
    loss, _, _ = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
    optimizer.step()
    model.update_ema()

  return timing.best_of(step, steps)[0]


def _maybe_reexec_with_hugepages():
  tunable = "glibc.malloc.hugetlb=1"
  if not FLAGS.malloc_hugepages or tunable in os.environ.get("GLIBC_TUNABLES", ""):
    return
  if not sys.platform.startswith("linux") or jax.default_backend() != "cpu":
    return
  env = dict(os.environ)
  env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), tunable]))
  os.execve(sys.executable, [sys.executable, "-m", "grn_jax.benchmarks.train_step",
                             *sys.argv[1:]], env)


def main(argv):
  del argv
  _maybe_reexec_with_hugepages()
  platform = jax.devices()[0].platform
  on_cpu = platform == "cpu"
  batch = FLAGS.batch or (8 if on_cpu else 256)
  dtype = FLAGS.dtype or ("float32" if on_cpu else "bfloat16")
  config = bench_config(FLAGS.variant, batch, dtype, FLAGS.remat, FLAGS.scan)
  peak_flops = flops.measure_matmul_peak_flops(2048, jnp.dtype("float32" if on_cpu else dtype))
  seconds, compile_s = time_ours(config, FLAGS.steps)
  step_flops = flops.c2i_train_flops_per_example(config.model) * batch
  rows = [("grn_jax (jit)", seconds)]
  if FLAGS.official:
    rows.append(("official PyTorch (eager)", time_official(FLAGS.official, config,
                                                           FLAGS.steps, FLAGS.variant)))
  print(f"\nGRN-{FLAGS.variant} train step, batch {batch}, {dtype}, 1 {platform} device; "
        f"model FLOPs/step {step_flops / 1e12:.3f} TFLOP; compile+first step {compile_s:.1f} s")
  print(f"measured {'fp32' if on_cpu else dtype} 2048^2 matmul peak: {peak_flops / 1e9:.1f} "
        "GFLOP/s")
  print(f"{'implementation':<28}{'s/step':>9}{'ex/s':>9}{'GFLOP/s':>10}{'MFU':>8}"
        f"{'vs official':>13}")
  reference = rows[-1][1] if FLAGS.official else None
  for name, sec in rows:
    speedup = f"{reference / sec:.2f}x" if reference else "-"
    print(f"{name:<28}{sec:>9.3f}{batch / sec:>9.2f}{step_flops / sec / 1e9:>10.1f}"
          f"{step_flops / sec / peak_flops:>8.1%}{speedup:>13}")


if __name__ == "__main__":
  timing.run(define_flags, main)
