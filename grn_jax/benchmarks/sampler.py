r"""Sampler speed: fixed vs entropy-adaptive steps, and the loop's overhead over bare forwards.

  python -m grn_jax.benchmarks.sampler [--variant=B] [--batch=8] [--num_steps=50]
      [--adaptive_target_mean=24] [--official=/path/to/MGenAI/GRN]

Random weights (or --checkpoint=a converted params dir). Measures, at the eval settings of
config.sample (interval CFG (0.44, 1.0), tau 1.31, linear schedule):
  * fixed-S sampling: seconds per batch, images/s, network evaluations (NFE) per image;
  * entropy-adaptive sampling: the same plus the mean steps per image. With random weights the
    entropy carries no information (every row gets the same budget), so unless
    --adaptive_target_mean=0 the intercept b is set so that the measured mean entropy maps to
    that many steps (24: GRN-B's mean in the paper), to time the adaptive program at a realistic
    budget; with 0 the config's constants are used;
  * bare forwards: the same number of passes of the jitted model alone (where guidance is
    active two batch-B passes on CPU, one doubled-batch pass elsewhere: the sampler's
    `guidance_batching`; conditional-only passes outside the interval), timed per pass; the
    loop's overhead is fixed-S time / bare time - 1 (goal: < 5%);
  * with --official (PyTorch installed): the official Denoiser.generate, timed over
    --official_steps steps (cond + uncond passes every step) with the same weights.
No decode (the tokenizer is timed elsewhere).
"""

import time
import types

from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import c2i as c2i_configs
from grn_jax import checkpointing
from grn_jax import hbq
from grn_jax.benchmarks import official
from grn_jax.benchmarks import timing
from grn_jax.models import build_c2i
from grn_jax.sampling import c2i
from grn_jax.sampling import refine

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("variant", "B", "Model size: B, L, H, G or tiny.")
  flags.DEFINE_integer("batch", 8, "Images per batch.")
  flags.DEFINE_integer("num_steps", 50, "Fixed steps (and the adaptive base grid / max).")
  flags.DEFINE_string("dtype", "float32", "Compute dtype.")
  flags.DEFINE_integer("repeats", 1, "Timed sampler runs (> 1: after a warm-up run).")
  flags.DEFINE_float("adaptive_target_mean", 24.0, "> 0: calibrate b to this mean budget.")
  flags.DEFINE_bool("adaptive", True, "Also time entropy-adaptive sampling.")
  flags.DEFINE_string("checkpoint", "", "A converted params dir (default: random weights).")
  flags.DEFINE_string("official", None, "Path to the official GRN repository (needs torch).")
  flags.DEFINE_integer("official_steps", 2, "Steps of the official sampler to time.")


def random_params(config, seed: int = 0):
  """Random GRN params (std 0.02) from the abstract init, without compiling init."""
  cfg = config.model
  module = build_c2i(cfg)
  d = c2i.spec_from_config(config).label_shape[-1]
  x = (jnp.zeros((1, cfg.input_size, cfg.input_size, d), jnp.int32), jnp.zeros((1,)),
       jnp.zeros((1,), jnp.int32))
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *x)["params"])
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(np.float32),
                      abstract)


def time_sampler(config, params, classes, key, adaptive: bool, settings, repeats: int):
  spec = c2i.spec_from_config(config, adaptive=adaptive)
  sampler = refine.jitted_sampler(c2i.model_apply(config), spec)
  uncond = c2i.null_labels(classes, config.model.num_classes)
  keys = refine.row_keys(key, classes.shape[0])
  start = time.perf_counter()
  compiled = sampler.lower(params, classes, uncond, keys, settings).compile()
  compile_s = time.perf_counter() - start
  # One untimed warm-up call first when repeats > 1 (a minutes-long sampler needs none).
  seconds, _, out = timing.best_of(lambda: compiled(params, classes, uncond, keys, settings),
                                   repeats, warmup=int(repeats > 1))
  return seconds, compile_s, jax.device_get(out)


def time_forwards(config, params, classes, repeats: int = 3) -> tuple[float, float]:
  """Seconds of one bare jitted forward at batch B and at 2B."""
  apply_fn = c2i.model_apply(config)
  d = c2i.spec_from_config(config).label_shape[-1]
  size = config.model.input_size
  out = []
  for b in (classes.shape[0], 2 * classes.shape[0]):
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 16, (b, size, size, d)),
                         jnp.int32)
    t = jnp.full((b,), 0.5)
    y = jnp.tile(classes, 2)[:b]
    fwd = jax.jit(apply_fn).lower(params, labels, t, y).compile()
    out.append(timing.best_of(lambda: fwd(params, labels, t, y), repeats)[0])
  return out[0], out[1]


def time_official(repo: str, config, params, batch: int, steps: int, variant: str) -> float:
  """Seconds per step of the official Denoiser.generate (cond + uncond passes), CPU eager."""
  denoiser = official.import_official(repo, "grn.utils_c2i.denoiser")
  import torch  # pylint: disable=g-import-not-at-top
  from grn_jax.convert.c2i import c2i_params_to_torch  # pylint: disable=g-import-not-at-top
  cfg, sample = config.model, config.sample
  k = hbq.num_classes(cfg.hbq_rounds, cfg.label_mode)
  d = c2i.spec_from_config(config).label_shape[-1]
  low, high = sample.cfg_interval
  args = types.SimpleNamespace(
      model=f"GRN_{variant}", img_size=16 * cfg.input_size, in_channels=k * d,
      class_num=cfg.num_classes, attn_dropout=0.0, proj_dropout=0.0, label_drop_prob=0.1,
      P_mean=-0.8, P_std=0.8, t_eps=5e-2, noise_scale=1.0, ema_decay1=0.9999,
      ema_decay2=0.9996, sampling_method="heun", num_sampling_steps=steps,
      cfg=sample.cfg_scale, interval_min=low, interval_max=high, tau=sample.temperature,
      method="GRN_ind" if cfg.label_mode == "ind" else "GRN_bit", hbq_round=cfg.hbq_rounds,
      patch_size=cfg.patch_size)
  model = denoiser.Denoiser(args).eval()
  sd = c2i_params_to_torch(params, cfg, prefix="")
  model.net.load_state_dict({k_: torch.from_numpy(np.asarray(v)) for k_, v in sd.items()})
  labels = torch.arange(batch) % cfg.num_classes
  torch.manual_seed(0)
  with torch.no_grad():
    model.generate(labels)  # warm-up
    start = time.perf_counter()
    model.generate(labels)
  return (time.perf_counter() - start) / steps


def run_benchmark(variant: str = "B", batch: int = 8, dtype: str = "float32",
                  num_steps: int = 50, repeats: int = 1, adaptive_target_mean: float = 24.0,
                  checkpoint: str = "", log=print, adaptive: bool = True) -> dict:
  """Times fixed and adaptive sampling and the bare forwards; returns the numbers."""
  config = c2i_configs.get_config(f"variant={variant}")
  config.model.dtype = dtype
  config.sample.update(num_steps=num_steps, max_steps=num_steps, min_steps=min(10, num_steps))
  params = restore = None
  if checkpoint:
    restore = checkpointing.restore_params(checkpoint)
  params = jax.device_put(restore if restore is not None else random_params(config))
  classes = jnp.arange(batch, dtype=jnp.int32) % config.model.num_classes
  key = jax.random.key(0)
  settings = c2i.settings_from_config(config.sample).as_arrays()
  log(f"GRN-{variant}, batch {batch}, {dtype}, {jax.devices()[0].platform}, cfg "
      f"{config.sample.cfg_scale} interval {tuple(config.sample.cfg_interval)}, tau "
      f"{config.sample.temperature}")
  fixed_s, fixed_compile, fixed = time_sampler(config, params, classes, key, False, settings,
                                               repeats)
  entropy = float(np.mean(fixed.entropy))
  log(f"fixed-{num_steps}: {fixed_s:.2f} s (compile {fixed_compile:.1f} s), mean H at step "
      f"{config.sample.warmup_steps} = {entropy:.4f}")
  adaptive_s, adaptive_out = float("nan"), None
  if adaptive and adaptive_target_mean > 0:
    offset = config.sample.warmup_steps if config.sample.entropy_budget == "after_warmup" else 0
    settings = settings.replace(entropy_b=jnp.float32(
        adaptive_target_mean - offset - float(settings.entropy_k) * entropy))
  if adaptive:
    adaptive_s, adaptive_compile, adaptive_out = time_sampler(config, params, classes, key,
                                                              True, settings, repeats)
    log(f"adaptive: {adaptive_s:.2f} s (compile {adaptive_compile:.1f} s), steps "
        f"{adaptive_out.steps.tolist()}")
  t_single, t_double = time_forwards(config, params, classes)
  doubled = int(np.sum(fixed.row_nfe - num_steps)) // batch  # guided steps per row
  # A guided step costs one forward at 2B ('doubled') or two at B ('sequential', CPU).
  sequential = refine.resolve_batching(c2i.spec_from_config(config)) == "sequential"
  guided_pass = 2 * t_single if sequential else t_double
  bare = doubled * guided_pass + (num_steps - doubled) * t_single
  log(f"bare forward: {t_single:.3f} s at batch {batch}, {t_double:.3f} s at {2 * batch}; "
      f"guided steps as {'two batch-B' if sequential else 'one doubled-batch'} forwards")
  return dict(config=config, params=params, fixed_s=fixed_s, fixed=fixed,
              adaptive_s=adaptive_s, adaptive=adaptive_out, bare_s=bare, doubled=doubled,
              entropy=entropy, t_single=t_single, t_double=t_double)


def main(argv):
  del argv
  batch, steps = FLAGS.batch, FLAGS.num_steps
  r = run_benchmark(FLAGS.variant, batch, FLAGS.dtype, steps, FLAGS.repeats,
                    FLAGS.adaptive_target_mean, FLAGS.checkpoint,
                    log=lambda *a: print(*a, flush=True), adaptive=FLAGS.adaptive)
  print(f"\n{'sampler':<12}{'s/batch':>9}{'images/s':>10}{'steps':>7}{'NFE/img':>9}"
        f"{'s/step':>8}")
  for name in ("fixed", "adaptive"):
    sec, out = r[f"{name}_s"], r[name]
    if out is None:
      continue
    print(f"{name:<12}{sec:>9.2f}{batch / sec:>10.3f}{float(np.mean(out.steps)):>7.1f}"
          f"{float(np.mean(out.row_nfe)):>9.1f}{sec / float(np.max(out.steps)):>8.3f}")
  doubled = r["doubled"]
  print(f"bare forwards ({doubled} guided + {steps - doubled} conditional-only steps): "
        f"{r['bare_s']:.2f} s; loop overhead of fixed-{steps}: "
        f"{100 * (r['fixed_s'] / r['bare_s'] - 1):+.1f}%")
  print(f"official sampler NFE (cond + uncond every step): {2 * steps} per image")
  if FLAGS.official:
    per_step = time_official(FLAGS.official, r["config"], r["params"], batch,
                             FLAGS.official_steps, FLAGS.variant)
    ours = f"{r['fixed_s'] / steps:.2f} s per step (fixed)"
    if r["adaptive"] is not None:
      ours += f", {r['adaptive_s'] / float(np.max(r['adaptive'].steps)):.2f} s (adaptive)"
    print(f"official Denoiser.generate: {per_step:.2f} s per CFG step at batch {batch} -> "
          f"{per_step * steps:.1f} s for {steps} steps; ours {ours}")

if __name__ == "__main__":
  timing.run(define_flags, main)
