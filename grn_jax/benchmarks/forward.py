r"""Jitted C2I forward time and memory (random weights), optionally next to the official model.

Times the sampler's model call, grn_jax.sampling.c2i.ModelApply (`apply_fn(params, labels,
keep_ratio, class_labels)`), at one batch.

  python -m grn_jax.benchmarks.forward --variant=B --batch=8 [--dtype=float32]
  python -m grn_jax.benchmarks.forward --official=/path/to/MGenAI/GRN   # also time PyTorch eager

The official comparison imports the official repository from the given path (PyTorch must be
installed; CUDA calls are neutralised for a CPU run) and loads the same weights into it.
"""

import resource
import time
import types

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from configs import c2i as c2i_configs
from grn_jax import flops
from grn_jax import hbq
from grn_jax.benchmarks import official
from grn_jax.benchmarks import timing
from grn_jax.models import build_c2i
from grn_jax.sampling import c2i

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  timing.define_common_flags()


def time_ours(cfg, batch: int, repeats: int):
  model = build_c2i(cfg)
  rng = np.random.default_rng(0)
  k = hbq.num_classes(cfg.hbq_rounds, cfg.label_mode)
  d = hbq.num_labels(cfg.latent_dim, cfg.hbq_rounds, cfg.label_mode)
  labels = jnp.asarray(rng.integers(0, k, (batch, cfg.input_size, cfg.input_size, d)), jnp.int32)
  t = jnp.asarray(rng.uniform(size=batch), jnp.float32)
  y = jnp.asarray(rng.integers(0, cfg.num_classes, batch), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(0), labels, t, y)
  # Zero-initialised layers (adaLN, output) would make every logit 0: randomise them so the
  # official comparison is meaningful.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(treedef, [
      x + 0.02 * jax.random.normal(k_, x.shape) if not bool(jnp.any(x)) else x
      for x, k_ in zip(leaves, keys)])
  fwd = jax.jit(c2i.ModelApply(model))
  start = time.perf_counter()
  compiled = fwd.lower(params["params"], labels, t, y).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  step = lambda: fwd(params["params"], labels, t, y).block_until_ready()
  seconds = timing.best_of(step, repeats)[0]
  temp = getattr(mem, "temp_size_in_bytes", 0) if mem is not None else 0
  args = getattr(mem, "argument_size_in_bytes", 0) if mem is not None else 0
  return params, (labels, t, y), seconds, compile_s, temp, args


def time_official(repo: str, cfg, params, inputs, repeats: int):
  """Eager forward of the official GRN with our weights loaded (CPU)."""
  grn_c2i = official.import_official(repo, "grn.models.grn_c2i")
  import torch  # pylint: disable=g-import-not-at-top
  from grn_jax.convert.c2i import c2i_params_to_torch  # pylint: disable=g-import-not-at-top
  method = "GRN_ind" if cfg.label_mode == "ind" else "GRN_bit"
  k = hbq.num_classes(cfg.hbq_rounds, cfg.label_mode)
  d = hbq.num_labels(cfg.latent_dim, cfg.hbq_rounds, cfg.label_mode)
  net = grn_c2i.GRN(input_size=cfg.input_size, patch_size=cfg.patch_size, in_channels=k * d,
                     hidden_size=cfg.hidden_size, depth=cfg.depth, num_heads=cfg.num_heads,
                     num_classes=cfg.num_classes, bottleneck_dim=cfg.bottleneck_dim,
                     in_context_len=cfg.in_context_len, in_context_start=cfg.in_context_start,
                     args=types.SimpleNamespace(method=method, hbq_round=cfg.hbq_rounds)).eval()
  sd = c2i_params_to_torch(params["params"], cfg, prefix="")
  net.load_state_dict({k_: torch.from_numpy(v) for k_, v in sd.items()})
  labels, t, y = (torch.from_numpy(np.asarray(a)) for a in inputs)
  labels = labels.permute(0, 3, 1, 2).contiguous()
  with torch.no_grad():
    out = net(labels, t, y)
    seconds = timing.best_of(lambda: net(labels, t, y), repeats)[0]
  return seconds, out.permute(0, 3, 4, 2, 1).numpy()


def main(argv):
  del argv
  cfg = c2i_configs.model_config(FLAGS.variant)
  cfg.dtype = FLAGS.dtype
  params, inputs, seconds, compile_s, temp, args = time_ours(cfg, FLAGS.batch, FLAGS.repeats)
  batch_flops = flops.c2i_forward_flops_per_example(cfg) * FLAGS.batch
  rows = [("grn_jax (jit)", seconds, batch_flops / seconds / 1e9)]
  delta = None
  if FLAGS.official:
    off_s, off_out = time_official(FLAGS.official, cfg, params, inputs, FLAGS.repeats)
    ours = np.asarray(jax.jit(c2i.ModelApply(build_c2i(cfg)))(params["params"], *inputs))
    delta = float(np.abs(ours - off_out).max())
    rows.append(("official PyTorch (eager)", off_s, batch_flops / off_s / 1e9))
  peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"\nGRN-{FLAGS.variant} forward, batch {FLAGS.batch}, {FLAGS.dtype}, "
        f"{jax.devices()[0].platform} ({jax.device_count()} devices visible, 1 used)")
  print(f"{'implementation':<28}{'seconds':>10}{'GFLOP/s':>10}{'speed-up':>10}")
  for name, sec, gflops in rows:
    print(f"{name:<28}{sec:>10.3f}{gflops:>10.1f}{rows[-1][1] / sec:>9.2f}x")
  print(f"compile: {compile_s:.1f} s; XLA temp buffers {temp / 2**20:.0f} MiB, arguments "
        f"{args / 2**20:.0f} MiB; process peak RSS {peak_rss:.2f} GiB")
  if delta is not None:
    print(f"max |logits(ours) - logits(official)| = {delta:.2e}")


if __name__ == "__main__":
  timing.run(define_flags, main)
