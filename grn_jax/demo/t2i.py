"""The prompt-to-digit demo, stage by stage (`run_t2i_demo(config, workdir)`; configs/demo_t2i.py).

  1. data       scikit-learn digits at config.demo.image_size, their stroke attributes and
                captions in the TRAIN phrasings (grn_jax/demo/captions.py)
  2. tokenizer  the tokenizer task on the digits -> workdir/tokenizer (as the digits demo)
  3. labels     HBQ bit labels of every digit -> workdir/digits_bits.npz
  4. text       the word-level tokenizer file workdir/text_tokenizer.json and the frozen random
                umT5 features of every caption and of the empty prompt (text_features.py)
  5. GRN        the T2I task of the training loop (trainers/t2iv.py) on the packed captioned
                labels in memory -> workdir/checkpoints, sampling params -> workdir/grn_params
  6. samples    `demo.per_digit` prompts per digit in the HELD-OUT phrasings through the T2I
                sampler (sampling/t2iv_run.py's generation family on sampling/generate.py)
                -> workdir/samples/*.png, samples.npz (images uint8 [N, H, W, 3], prompts,
                labels = the digit named), grid.png (rows = digits)
  7. evaluation the digits classifier on real digits, on the samples -> evaluation.json

Stages up to the GRN reuse what an earlier run left in the workdir; samples are drawn anew.
"""

import json
import os
import shutil
import time
from typing import Any

import ml_collections
import numpy as np

from grn_jax import models
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.data import captioned
from grn_jax.demo import captions
from grn_jax.demo import digits
from grn_jax.demo import evaluate
from grn_jax.demo import images as image_files
from grn_jax.demo import text_demo
from grn_jax.demo import text_features
from grn_jax.sampling import generate
from grn_jax.sampling import outputs
from grn_jax.sampling import t2iv_run



def held_out_prompts(per_digit: int, seed: int) -> tuple[list[str], np.ndarray]:
  """`per_digit` prompts per digit in the held-out phrasings (cycling through phrasings and
  strokes in a seeded order): (prompts [10 * per_digit], digits int32 [10 * per_digit])."""
  rng = np.random.default_rng(seed)
  combos = [(t, s) for t in captions.IMAGE_HELD_OUT for s in captions.STROKES]
  prompts, named = [], []
  for digit in range(digits.NUM_CLASSES):
    order = rng.permutation(len(combos))
    for k in range(per_digit):
      template, stroke = combos[order[k % len(combos)]]
      prompts.append(captions.fill(template, digit, stroke))
      named.append(digit)
  return prompts, np.asarray(named, np.int32)


def training_captions(classes: np.ndarray, strokes: np.ndarray, per_image: int, seed: int,
                      filler_prob: float = 0.0) -> tuple[np.ndarray, list[str]]:
  """`per_image` distinct TRAIN phrasings of each digit, each with filler words with
  probability filler_prob (captions.with_fillers): (image index [M], captions [M])."""
  every = captions.captions(captions.IMAGE_TRAIN, classes, strokes)
  rng = np.random.default_rng(seed)
  fillers = np.random.default_rng([seed, 1])   # its own stream: the phrasings do not change
  index, texts = [], []
  for i, options in enumerate(every):
    distinct = sorted(set(options))
    for k in rng.permutation(len(distinct))[:per_image]:
      index.append(i)
      texts.append(captions.with_fillers(distinct[k], fillers, filler_prob))
  return np.asarray(index), texts


def run_t2i_demo(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the seven stages; returns a summary dict (paths, timings, metrics)."""
  workdir, timings, summary, start = text_demo.begin(config, "t2i", workdir)
  say = text_demo.say

  t = time.perf_counter()
  size = config.demo.image_size
  gray, classes = digits.load_digits_gray(size)
  images = digits.gray_to_model(gray)
  strokes = captions.stroke_attributes(gray, classes)
  index, texts = training_captions(classes, strokes, config.demo.captions_per_image, config.seed,
                                   config.demo.filler_prob)
  prompts, named = held_out_prompts(config.demo.per_digit, config.seed + 1)
  say(f"[1/7] data: {len(images)} digits at {size}x{size}, {len(texts)} training captions "
      f"(e.g. {texts[0]!r}), {len(prompts)} held-out prompts (e.g. {prompts[0]!r})")
  timings["data"] = time.perf_counter() - t

  tok_params, bits = text_demo.media_stages(config, workdir, images, "digits_bits.npz", 7, summary,
                                           timings)

  t = time.perf_counter()
  encoder_cfg, features, null, separation = text_demo.text_stage(
      config, workdir, texts, prompts, captions.IMAGE_HELD_OUT)
  summary["text_separation"] = separation
  say(f"[4/7] text: {len(features)} caption features; held-out prompts of different digits "
      f"{separation['min_digit_distance']:.2f} (min) / {separation['mean_digit_distance']:.2f} "
      "(mean) apart, relative to their norm")
  timings["text"] = time.perf_counter() - t

  t = time.perf_counter()
  examples = [dict(labels=bits[i], features=f, h_div_w=1.0) for i, f in zip(index, features)]
  params = text_demo.grn_stage(config, workdir, captioned.CaptionedArrays(examples, null),
                               "[5/7]")
  timings["grn"] = time.perf_counter() - t

  t = time.perf_counter()
  say(f"[6/7] sampling {len(prompts)} digits ({config.demo.per_digit} per digit), "
      f"{config.sample.num_steps} steps, guidance {config.sample.cfg_scale}")
  out_dir = os.path.join(workdir, "samples")
  shutil.rmtree(out_dir, ignore_errors=True)
  prompt_features = text_demo.compact(*text_features.encode(
      text_features.frozen_encoder(config.text_encoder, encoder_cfg.tokenizer_path), prompts))
  run_config = text_demo.sampling_config(config, encoder_cfg)
  family = t2iv_run.T2IVGeneration(run_config, "t2i", prompts, dict(enumerate(prompt_features)),
                                   null, (1,) + bits.shape[2:4], 1.0)
  tok_module = models.build_tokenizer(config.tokenizer)
  result = generate.generate(family, params, tokenizer_io.TokenizerDecode(tok_module), tok_params,
                             out_dir, batch_size=config.sample.batch_size, seed=config.sample.seed,
                             mesh=sharding.make_mesh(config.mesh), show_progress=True)
  samples = np.stack([generate.read_png(outputs.png_path(out_dir, i))[0]
                      for i in range(len(prompts))])
  npz = os.path.join(workdir, "samples.npz")
  np.savez(npz, images=samples, prompts=np.asarray(prompts), labels=named)
  grid = samples.reshape(digits.NUM_CLASSES, -1, *samples.shape[1:])[:, :config.demo.grid_per_digit]
  grid_path = os.path.join(workdir, "grid.png")
  image_files.save_png(image_files.tile_grid(grid.reshape(-1, *samples.shape[1:]),
                                             digits.NUM_CLASSES, scale=2), grid_path)
  summary["mean_steps"] = result["mean_steps"]
  timings["sampling"] = time.perf_counter() - t

  t = time.perf_counter()
  evaluation = {}
  if config.demo.evaluate:
    say("[7/7] evaluation: digits classifier on real digits, applied to the samples")
    evaluation = evaluate.evaluate_samples(samples, named, evaluate.DigitsClassifier(size))
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
      json.dump(evaluation, f, indent=2)
  timings["evaluation"] = time.perf_counter() - t
  timings["total"] = time.perf_counter() - start
  summary.update(timings_seconds=timings, evaluation=evaluation,
                 outputs=dict(samples=npz, grid=grid_path, pngs=out_dir))
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=str)
  say(text_demo.format_summary("prompt-to-digit", summary))
  return summary
