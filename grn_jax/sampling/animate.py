r"""The refinement as an animated GIF and a PNG strip (the paper's framework figure, per step).

  python -m grn_jax.sampling.animate --config=configs/c2i.py:variant=B --workdir=DIR \
      --classes=207,360,387 --out=DIR/refinement [--seed=0] [--adaptive] [--fps=6] [--scale=1]

restores the params like `--mode=sample` (config.sample.checkpoint or the workdir's training
checkpoint, EMA config.sample.params) and the tokenizer (config.tokenizer), samples
one image per class with the per-step trace and decoded previews (one compiled program), and
writes OUT.gif and OUT.png.

Each GIF frame shows, for every sample (one row each): the decoded network input of step i (the
mix of kept predictions and original random labels), the decoded full prediction sampled at
step i, and the step's label map per latent position, coloured by the fraction of its D labels
that were filled (green: random -> prediction), kept (blue: prediction -> new prediction) or
erased (red: prediction -> its random label), grey for labels that stay random. The header gives
the step, the keep ratio t of the input and the normalised entropy H. The PNG strip shows inputs
(upper row) and predictions (lower row) of evenly spaced steps of every sample.
"""

from typing import Any

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw

from grn_jax import tokenizer_io
from grn_jax.sampling import c2i
from grn_jax.sampling import generate

FILLED = np.array([60, 200, 80], np.float32)
KEPT = np.array([70, 120, 230], np.float32)
ERASED = np.array([230, 60, 60], np.float32)
RANDOM = np.array([128, 128, 128], np.float32)
HEADER = 12  # pixels of text above every frame


def map_image(keep_before: np.ndarray, keep_after: np.ndarray, size: tuple[int, int]):
  """uint8 [H, W, 3] colour map of one step of one sample; masks bool [h, w, D]."""
  filled = (keep_after & ~keep_before).mean(-1)[..., None]
  kept = (keep_after & keep_before).mean(-1)[..., None]
  erased = (keep_before & ~keep_after).mean(-1)[..., None]
  rest = 1.0 - filled - kept - erased
  rgb = filled * FILLED + kept * KEPT + erased * ERASED + rest * RANDOM
  img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
  return np.asarray(img.resize((size[1], size[0]), Image.NEAREST))


def _check_trace(trace: dict[str, Any]) -> None:
  for name in ("input_images", "pred_images", "keep", "entropy", "keep_ratio"):
    if name not in trace:
      raise ValueError(f"the trace lacks {name!r}: sample with trace=True, trace_previews=True "
                       "and a decode_fn.")


def upscale(images: np.ndarray, scale: int) -> np.ndarray:
  """[..., H, W, C] -> [..., H s, W s, C] (nearest)."""
  return np.repeat(np.repeat(images, scale, axis=-3), scale, axis=-2) if scale > 1 else images


def refinement_frames(trace: dict[str, Any], steps, scale: int = 1) -> np.ndarray:
  """GIF frames uint8 [T + 1, B * (s H + HEADER), 3 s W, 3], T = max(steps), s = scale.

  Frame i < T shows step i (input, prediction, map); frame T the final samples. The images are
  upscaled `scale` times (nearest), e.g. for small digits.
  """
  _check_trace(trace)
  trace = {k: np.asarray(v) for k, v in trace.items()}
  total = int(np.max(np.asarray(steps)))
  inputs = upscale(trace["input_images"], scale)
  preds, keep = upscale(trace["pred_images"], scale), trace["keep"]
  batch, height, width = inputs.shape[1:4]
  frames = []
  for i in range(total + 1):
    rows = []
    for r in range(batch):
      step = min(i, total - 1)
      before = keep[i - 1, r] if i > 0 else np.zeros_like(keep[0, r])
      after = keep[i, r] if i < total else keep[total - 1, r]
      if i == total:
        before = after  # the final frame: nothing changes any more
      panel = np.concatenate([inputs[i, r], preds[step, r],
                              map_image(before, after, (height, width))], axis=1)
      header = Image.new("RGB", (panel.shape[1], HEADER), (255, 255, 255))
      row_steps = int(np.asarray(steps)[r])
      if i == total or i >= row_steps:
        text = f"final ({row_steps} steps)"
      else:
        text = (f"step {i + 1}/{row_steps} t={trace['keep_ratio'][i, r]:.2f} "
                f"H={trace['entropy'][i, r]:.2f}")
      ImageDraw.Draw(header).text((2, 0), text, fill=(0, 0, 0))
      rows.append(np.concatenate([np.asarray(header), panel], axis=0))
    frames.append(np.concatenate(rows, axis=0))
  return np.stack(frames)


def refinement_strip(trace: dict[str, Any], steps, columns: int = 8,
                     scale: int = 1) -> np.ndarray:
  """uint8 [2 B s H, C s W, 3]: inputs and predictions of C evenly spaced steps per sample."""
  _check_trace(trace)
  total = int(np.max(np.asarray(steps)))
  chosen = np.unique(np.linspace(0, total - 1, min(columns, total)).round().astype(int))
  inputs = upscale(np.asarray(trace["input_images"]), scale)
  preds = upscale(np.asarray(trace["pred_images"]), scale)
  rows = []
  for r in range(inputs.shape[1]):
    rows.append(np.concatenate([inputs[i + 1, r] for i in chosen], axis=1))
    rows.append(np.concatenate([preds[i, r] for i in chosen], axis=1))
  return np.concatenate(rows, axis=0)


def write_animation(trace: dict[str, Any], steps, out_prefix: str, fps: float = 6.0,
                    columns: int = 8, scale: int = 1) -> tuple[str, str]:
  """Writes OUT.gif (frames, the last held 2 s) and OUT.png (the strip); returns both paths."""
  frames = refinement_frames(trace, steps, scale)
  images = [Image.fromarray(f) for f in frames]
  durations = [round(1000 / fps)] * (len(images) - 1) + [2000]
  gif, png = out_prefix + ".gif", out_prefix + ".png"
  images[0].save(gif, save_all=True, append_images=images[1:], duration=durations, loop=0)
  Image.fromarray(refinement_strip(trace, steps, columns, scale)).save(png)
  return gif, png


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("workdir", "", "Workdir with a training checkpoint (unless "
                      "config.sample.checkpoint is set).")
  flags.DEFINE_list("classes", ["0"], "Class of every sample (one row each).")
  flags.DEFINE_string("out", None, "Output prefix: OUT.gif and OUT.png.")
  flags.DEFINE_integer("seed", 0, "Sampling seed.")
  flags.DEFINE_bool("adaptive", None, "Entropy-guided steps (default: config.sample.adaptive).")
  flags.DEFINE_float("fps", 6.0, "GIF frames per second.")
  flags.DEFINE_integer("columns", 8, "Steps shown in the PNG strip.")
  flags.DEFINE_integer("scale", 1, "Upscaling of the images (nearest).")


def main(argv):
  del argv
  fl = flags.FLAGS
  if not fl.out:
    raise app.UsageError("--out is required.")
  config = fl.config
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/c2i.py:variant=B.")
  params = generate.load_sampling_params(config, fl.workdir)
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  classes = np.asarray([int(c) for c in fl.classes], np.int32)
  out = c2i.sample(config, params, classes, jax.random.key(fl.seed), adaptive=fl.adaptive,
                   trace=True, trace_previews=True,
                   decode=(tokenizer_io.TokenizerDecode(tok_module), tok_params))
  trace = jax.device_get(out.trace)
  gif, png = write_animation(trace, np.asarray(out.steps), fl.out, fl.fps, fl.columns,
                             fl.scale)
  print(f"steps {np.asarray(out.steps).tolist()}, NFE per image "
        f"{np.asarray(out.row_nfe).tolist()}; wrote {gif} and {png}")


if __name__ == "__main__":
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=False)
  define_flags()
  app.run(main)
