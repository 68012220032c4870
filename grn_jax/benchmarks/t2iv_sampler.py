r"""T2I/T2V sampler: entropy-guided vs fixed steps, and how image-to-video keeps frame 0.

  python -m grn_jax.benchmarks.t2iv_sampler [--variant=tiny] [--batch=4] [--pixels=0.06M]
      [--num_steps=50] [--duration=0.25] [--repeats=2]

Random weights (GRN, d=64 tokenizer of `configs/t2iv.py:variant=...`), random text features
(prompt and negative prompt; the umT5 encoder runs before sampling and is not timed). Prints:
  * for an image (1 latent frame) and a video (`--duration` s): fixed `--num_steps` and
    entropy-guided steps (config.sample's warm-up, min/max steps, k and b; sampling/t2iv.py):
    mean steps per output, seconds per output (sampling and the tokenizer decode in one
    program, after compilation; the fastest of `--repeats` runs) and the first call's excess
    (compilation). With random
    weights the entropy is no quality signal: the budgets only show what the rule does with it
    (its constants turn a random model's H into the max); `--adaptive_target_mean=S` adds the
    entropy-guided program with b calibrated so that the mean H maps to S steps;
  * image-to-video: a synthetic picture encoded by the causal tokenizer fixes latent frame 0;
    the fraction of frame 0's labels kept, the PSNR of decoded frame 0 against the picture and
    against the tokenizer's own round trip of the picture alone (about 100 dB: frame 0 decodes to
    the image's reconstruction up to float rounding, so i2v keeps the picture as well as the
    tokenizer can; with a random tokenizer that reconstruction itself is poor).
"""

import time

from absl import flags
import jax
import numpy as np

from configs import t2iv as t2iv_configs
from grn_jax import resolution
from grn_jax import tokenizer_io
from grn_jax.benchmarks import timing
from grn_jax.evaluation import recon
from grn_jax.models import build_t2iv
from grn_jax.sampling import editing
from grn_jax.sampling import t2iv
from grn_jax.sampling import t2iv_run

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("variant", "tiny", "configs/t2iv.py variant (tiny | 2B | 8B).")
  flags.DEFINE_integer("batch", 4, "Outputs per batch.")
  flags.DEFINE_string("pixels", "0.06M", "Pixel bucket (grn_jax.resolution.PIXEL_BUCKETS).")
  flags.DEFINE_integer("num_steps", 50, "Fixed steps (official max_infer_steps and Tmax).")
  flags.DEFINE_float("duration", 0.25, "Video seconds (frames = duration * 16 + 1).")
  flags.DEFINE_integer("text_length", 16, "Text tokens of the random prompt features.")
  flags.DEFINE_integer("repeats", 2, "Timed runs (the fastest is reported).")
  flags.DEFINE_float("adaptive_target_mean", 0.0, "> 0: also time entropy-guided steps with b "
                     "calibrated so that the measured mean H maps to this many steps.")


def test_picture(height: int, width: int) -> np.ndarray:
  """uint8 [height, width, 3]: a smooth colour gradient with a disc and a bar."""
  y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
  image = np.stack([255 * x, 255 * y, 255 * (1 - x) * y], axis=-1)
  disc = (y - 0.4) ** 2 + (x - 0.35) ** 2 < 0.04
  image[disc] = (240, 220, 40)
  image[int(0.7 * height):int(0.8 * height), width // 2:] = (20, 20, 160)
  return image.astype(np.uint8)


class Setup:
  """The model, random params and text caches of a benchmark run."""

  def __init__(self, variant: str, batch: int, text_length: int, seed: int = 0):
    self.config = t2iv_configs.get_config(f"variant={variant},task=t2v")
    self.config.sample.random_init = True
    self.config.tokenizer.random_init = True
    self.module = build_t2iv(self.config.model)
    self.params = t2iv_run.load_grn_params(self.config, self.module)
    self.tok_module, self.tok_params = tokenizer_io.load_tokenizer(self.config.tokenizer, seed)
    rng = np.random.default_rng(seed)
    dim = self.config.model.text_dim
    encode = t2iv.encode_text_fn(self.module)
    mask = np.ones((batch, text_length), bool)
    self.text_cond = encode(self.params, rng.standard_normal((batch, text_length, dim),
                                                             np.float32), mask)
    self.text_uncond = encode(self.params, rng.standard_normal((1, text_length, dim),
                                                               np.float32), mask[:1])
    self.batch = batch

  def settings(self, entropy_b: float | None = None) -> t2iv.T2IVSettings:
    sample = self.config.sample
    return t2iv.T2IVSettings(cfg_scale=sample.cfg_scale, cfg_interval=sample.cfg_interval,
                             temperature=sample.temperature, snr_shift=sample.snr_shift,
                             entropy_k=sample.entropy_k,
                             entropy_b=sample.entropy_b if entropy_b is None else entropy_b)

  def sampler(self, shape, h_div_w: float, num_steps: int, adaptive: bool):
    sample = self.config.sample
    return t2iv.make_sampler(
        self.module, shape=shape, h_div_w=h_div_w, num_steps=num_steps,
        schedule_steps=num_steps, adaptive=adaptive, warmup_steps=sample.warmup_steps,
        min_steps=min(sample.min_steps, num_steps), max_steps=num_steps,
        decode_fn=tokenizer_io.Uint8Decode(tokenizer_io.TokenizerDecode(self.tok_module)))


def time_sampler(setup: Setup, shape, h_div_w: float, num_steps: int, adaptive: bool,
                 repeats: int, entropy_b: float | None = None,
                 **fixed) -> tuple[float, float, t2iv.T2IVOutput]:
  """(seconds per batch, compile seconds: the first call's excess, the output)."""
  sampler = setup.sampler(shape, h_div_w, num_steps, adaptive)

  def call():
    return jax.block_until_ready(sampler(
        setup.params, setup.text_cond, setup.text_uncond, setup.settings(entropy_b),
        jax.random.key(0),
        decode_params=setup.tok_params, **fixed))

  times = []
  for _ in range(1 + repeats):
    start = time.perf_counter()
    out = call()
    times.append(time.perf_counter() - start)
  best = min(times[1:], default=times[0])
  return best, times[0] - best, jax.device_get(out)


def steps_rows(setup: Setup, pixels: str, num_steps: int, duration: float, repeats: int,
               target_mean: float = 0.0) -> list[dict]:
  """Fixed vs entropy-guided rows for an image and a video; with target_mean > 0 also the
  entropy-guided program with b set so that the fixed run's mean H maps to that many steps
  (random weights give every row about the same H: the budget a trained model would spend)."""
  rows = []
  for kind, h_div_w, frames in (("image", 1.0, 1), ("video", 9 / 16, resolution.latent_frames(
      resolution.num_frames(duration)))):
    template = resolution.nearest_template(h_div_w)
    shape = (frames,) + tuple(resolution.latent_grid(template, pixels))
    runs = [("fixed", False, None), ("entropy", True, None)]
    for name, adaptive, entropy_b in runs:
      seconds, compile_s, out = time_sampler(setup, shape, template, num_steps, adaptive,
                                             repeats, entropy_b)
      entropy = float(np.mean(out.entropy))  # H at the warm-up step (the same in every run)
      rows.append(dict(output=kind, latent=shape, steps=name, entropy=entropy,
                       mean_steps=float(np.mean(out.steps)),
                       seconds_per_output=seconds / setup.batch, compile_s=compile_s))
      if name == "entropy" and target_mean > 0:
        sample = setup.config.sample
        runs.append((f"b->{target_mean:g}", True,
                     target_mean - sample.warmup_steps - sample.entropy_k * entropy))
  return rows


def i2v_row(setup: Setup, pixels: str, num_steps: int, duration: float) -> dict:
  """How well image-to-video keeps frame 0 (module docstring)."""
  template = resolution.nearest_template(9 / 16)
  height, width = resolution.latent_grid(template, pixels)
  frames = resolution.latent_frames(resolution.num_frames(duration))
  stride = resolution.TOKENIZER_STRIDE
  picture = test_picture(height * stride, width * stride)
  rounds = setup.config.model.hbq_rounds
  labels = np.asarray(tokenizer_io.encode_labels(setup.tok_module, setup.tok_params,
                                                 picture[None], rounds, "bit"))
  fixed_labels, fixed_mask = editing.image_to_video(np.repeat(labels, setup.batch, 0), frames)
  _, _, out = time_sampler(setup, (frames, height, width), template, num_steps, False, 0,
                           fixed_labels=fixed_labels, fixed_mask=fixed_mask)
  round_trip = np.asarray(tokenizer_io.to_uint8(tokenizer_io.decode_labels(
      setup.tok_module, setup.tok_params, labels, rounds, "bit")))  # uint8 [1, H, W, 3]
  frame0 = np.asarray(out.images)[:, 0]
  return dict(latent=(frames, height, width),
              frame0_labels_kept=float(np.mean(out.labels[:, 0] == fixed_labels[:, 0])),
              psnr_vs_picture=float(np.mean(recon.psnr(frame0, picture[None]))),
              psnr_round_trip_vs_picture=float(recon.psnr(round_trip, picture[None])[0]),
              psnr_vs_round_trip=float(np.min(recon.psnr(frame0, round_trip))))


def main(argv) -> None:
  del argv
  setup = Setup(FLAGS.variant, FLAGS.batch, FLAGS.text_length)
  print(f"GRN {FLAGS.variant}, random weights, batch {FLAGS.batch}, {FLAGS.pixels}, "
        f"{jax.devices()[0].platform}")
  print(f"{'output':<7}{'latent T,h,w':<14}{'steps':<9}{'mean steps':>11}{'s/output':>10}"
        f"{'compile s':>11}{'H':>8}")
  for row in steps_rows(setup, FLAGS.pixels, FLAGS.num_steps, FLAGS.duration, FLAGS.repeats,
                        FLAGS.adaptive_target_mean):
    print(f"{row['output']:<7}{str(row['latent']):<14}{row['steps']:<9}"
          f"{row['mean_steps']:>11.2f}{row['seconds_per_output']:>10.3f}{row['compile_s']:>11.1f}"
          f"{row['entropy']:>8.3f}")
  row = i2v_row(setup, FLAGS.pixels, FLAGS.num_steps, FLAGS.duration)
  print(f"image-to-video {row['latent']}: frame-0 labels kept {row['frame0_labels_kept']:.4f}; "
        f"PSNR of decoded frame 0 vs the picture {row['psnr_vs_picture']:.2f} dB (the "
        f"tokenizer's own round trip: {row['psnr_round_trip_vs_picture']:.2f} dB), vs that "
        f"round trip {row['psnr_vs_round_trip']:.2f} dB")


if __name__ == "__main__":
  timing.run(define_flags, main)
