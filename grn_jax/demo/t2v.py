"""The prompt-to-motion demo, stage by stage (`run_t2v_demo(config, workdir)`; demo_t2v.py).

  1. data       scikit-learn digits at demo.digit_size sliding across a demo.image_size canvas
                over 9 frames (grn_jax/demo/motion.py), each digit in demo.captions_per_clip
                directions; captions in the TRAIN motion phrasings ("a three moving to the
                left"), some with words other than the digit and direction dropped
                (demo.drop_prob) and filler words added (demo.filler_prob); the last
                demo.i2v_images digits are held out of training
  2. tokenizer  the tokenizer task on the clips (causal video tokenizer, 9 frames -> 3 latent
                frames) -> workdir/tokenizer
  3. labels     HBQ bits of every clip -> workdir/clips_bits.npz
  4. text       word-level tokenizer file and frozen random umT5 features (text_features.py)
  5. GRN        the T2V task of the loop on the packed captioned clips -> workdir/checkpoints
  6. videos     demo.per_direction prompts per (digit, direction) in the HELD-OUT phrasings
                through the T2V generation family -> workdir/videos/*.gif, videos.npz (videos
                uint8 [N, 9, H, W, 3], prompts, digits, directions)
  7. i2v        image to video: each held-out digit at the start of its motion as frame 0
                (latent frame 0 fixed, sampling/editing.py) -> workdir/i2v/*.gif, i2v.npz and
                the PSNR of generated frame 0 against the input image
  8. evaluation frame digit accuracy and direction correctness (evaluate_motion.py)
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
from grn_jax.demo import evaluate_motion
from grn_jax.demo import motion
from grn_jax.demo import text_demo
from grn_jax.demo import text_features
from grn_jax.sampling import editing
from grn_jax.sampling import generate
from grn_jax.sampling import outputs
from grn_jax.sampling import t2iv_run


class ArrayWriter:
  """Output writer of the demo's videos: {i:06d}.npz (uint8 `pixels` [T, H, W, 3] and the
  metadata as JSON) and {i:06d}.gif."""

  def __init__(self, fps: float):
    self.fps = fps

  def done(self, out_dir: str, index: int) -> bool:
    return os.path.exists(os.path.join(out_dir, f"{index:06d}.npz"))

  def write(self, out_dir: str, index: int, pixels: np.ndarray, meta) -> None:
    stem = os.path.join(out_dir, f"{index:06d}")
    outputs.save_gif(stem + ".gif", pixels, self.fps)
    meta = json.dumps({k: outputs.plain(v) for k, v in meta.items()})
    with open(stem + ".npz.tmp", "wb") as f:
      np.savez(f, pixels=np.asarray(pixels, np.uint8), meta=meta)
    os.replace(stem + ".npz.tmp", stem + ".npz")

  def read(self, out_dir: str, index: int) -> tuple[np.ndarray, dict]:
    path = os.path.join(out_dir, f"{index:06d}.npz")
    try:
      with np.load(path) as data:
        return data["pixels"], json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as e:
      raise outputs.OutputDamaged(f"{path} is unreadable ({e})") from e

  def remove(self, out_dir: str, index: int) -> None:
    outputs.remove_files([os.path.join(out_dir, f"{index:06d}{s}") for s in (".npz", ".gif")])

  def read_all(self, out_dir: str, total: int) -> np.ndarray:
    return np.stack([self.read(out_dir, i)[0] for i in range(total)])


def motion_prompts(per_direction: int, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
  """Held-out-phrasing prompts: per_direction per (digit, direction) -> (prompts, digits
  int32, directions str), digit-major."""
  rng = np.random.default_rng(seed)
  combos = [(t, s) for t in captions.MOTION_HELD_OUT for s in captions.STROKES]
  prompts, named, moves = [], [], []
  for digit in range(digits.NUM_CLASSES):
    for direction in captions.DIRECTIONS:
      for k in rng.permutation(len(combos))[:per_direction]:
        template, stroke = combos[k]
        prompts.append(captions.fill(template, digit, stroke, direction))
        named.append(digit)
        moves.append(direction)
  return prompts, np.asarray(named, np.int32), np.asarray(moves)


def _generate(family, params, tok_module, tok_params, config, out_dir: str) -> np.ndarray:
  writer = ArrayWriter(1000 / config.demo.gif_frame_ms)
  family.writer = writer
  shutil.rmtree(out_dir, ignore_errors=True)
  generate.generate(family, params, tokenizer_io.TokenizerDecode(tok_module), tok_params, out_dir,
                    batch_size=config.sample.batch_size, seed=config.sample.seed,
                    mesh=sharding.make_mesh(config.mesh), show_progress=True)
  return writer.read_all(out_dir, family.num_outputs)


def run_t2v_demo(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the eight stages; returns a summary dict (paths, timings, metrics)."""
  workdir, timings, summary, start = text_demo.begin(config, "t2v", workdir)
  say, demo = text_demo.say, config.demo

  t = time.perf_counter()
  gray, classes = digits.load_digits_gray(demo.digit_size)
  held = np.arange(len(gray) - demo.i2v_images, len(gray))
  train_rows = np.arange(len(gray) - demo.i2v_images)
  rng = np.random.default_rng(config.seed)
  rows = np.repeat(train_rows, demo.captions_per_clip)
  directions = np.concatenate([rng.permutation(captions.DIRECTIONS)[:demo.captions_per_clip]
                               for _ in train_rows])
  clips = motion.make_clips(gray[rows], directions, demo.image_size)
  media = digits.gray_to_model(clips.reshape(-1, demo.image_size, demo.image_size)).reshape(
      clips.shape + (3,))
  strokes = captions.stroke_attributes(gray, classes)[rows]
  options = captions.captions(captions.MOTION_TRAIN, classes[rows], strokes, directions)
  fillers = np.random.default_rng([config.seed, 1])
  drops = np.random.default_rng([config.seed, 2])   # its own stream, as the fillers'
  texts = [captions.with_fillers(captions.drop_words(row[k], drops, demo.drop_prob), fillers,
                                 demo.filler_prob)
           for row, k in zip(options, rng.integers(0, len(captions.MOTION_TRAIN), len(options)))]
  prompts, named, moves = motion_prompts(demo.per_direction, config.seed + 1)
  say(f"[1/8] data: {len(clips)} clips {media.shape[1:]} (e.g. {texts[0]!r}), "
      f"{len(prompts)} held-out prompts (e.g. {prompts[0]!r})")
  timings["data"] = time.perf_counter() - t

  tok_params, bits = text_demo.media_stages(config, workdir, media, "clips_bits.npz", 8, summary,
                                           timings)
  del media

  t = time.perf_counter()
  i2v_prompts = [captions.fill("a {word} moving to the {dir}", int(classes[i]), "",
                               captions.DIRECTIONS[k % 4]) for k, i in enumerate(held)]
  encoder_cfg, features, null, separation = text_demo.text_stage(
      config, workdir, texts, prompts + i2v_prompts, captions.MOTION_HELD_OUT, "left")
  summary["text_separation"] = separation
  say(f"[4/8] text: {len(features)} caption features; held-out prompts of different digits "
      f"{separation['min_digit_distance']:.2f} (min) apart, relative to their norm")
  timings["text"] = time.perf_counter() - t

  t = time.perf_counter()
  examples = [dict(labels=b, features=f, h_div_w=1.0) for b, f in zip(bits, features)]
  params = text_demo.grn_stage(config, workdir, captioned.CaptionedArrays(examples, null),
                               "[5/8]")
  timings["grn"] = time.perf_counter() - t

  t = time.perf_counter()
  say(f"[6/8] videos: {len(prompts)} prompts, {config.sample.num_steps} steps, guidance "
      f"{config.sample.cfg_scale}")
  encoder = text_features.frozen_encoder(config.text_encoder, encoder_cfg.tokenizer_path)
  run_config = text_demo.sampling_config(config, encoder_cfg)
  tok_module = models.build_tokenizer(config.tokenizer)
  shape = bits.shape[1:4]
  feats = text_demo.compact(*text_features.encode(encoder, prompts))
  family = t2iv_run.T2IVGeneration(run_config, "t2v", prompts, dict(enumerate(feats)), null,
                                   shape, 1.0)
  videos = _generate(family, params, tok_module, tok_params, config,
                     os.path.join(workdir, "videos"))
  npz = os.path.join(workdir, "videos.npz")
  np.savez(npz, videos=videos, prompts=np.asarray(prompts), digits=named, directions=moves)
  timings["videos"] = time.perf_counter() - t

  t = time.perf_counter()
  say(f"[7/8] image to video: {len(held)} held-out digits as frame 0")
  first = motion.make_clips(gray[held], [captions.DIRECTIONS[k % 4] for k in range(len(held))],
                            demo.image_size)[:, 0]
  first_model = digits.gray_to_model(first)
  encode = tokenizer_io.make_encode_fn(tok_module, config.model.hbq_rounds, "bit")
  i2v_videos, i2v_feats = [], text_demo.compact(*text_features.encode(encoder, i2v_prompts))
  for k in range(len(held)):
    labels = np.asarray(encode(tok_params, first_model[k:k + 1]))
    fixed = editing.image_to_video(labels, shape[0])
    family = t2iv_run.T2IVGeneration(run_config, "i2v", [i2v_prompts[k]], {0: i2v_feats[k]},
                                     null, shape, 1.0, fixed=fixed)
    i2v_videos.append(_generate(family, params, tok_module, tok_params, config,
                                os.path.join(workdir, "i2v", f"{k:02d}"))[0])
  i2v_videos = np.stack(i2v_videos)
  real = np.asarray(tokenizer_io.to_uint8(first_model), np.float32)
  mse = np.mean((i2v_videos[:, 0].astype(np.float32) - real)**2, axis=(1, 2, 3))
  psnr = 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))
  i2v_npz = os.path.join(workdir, "i2v.npz")
  np.savez(i2v_npz, videos=i2v_videos, images=np.asarray(tokenizer_io.to_uint8(first_model)),
           prompts=np.asarray(i2v_prompts), digits=classes[held],
           directions=np.asarray([captions.DIRECTIONS[k % 4] for k in range(len(held))]))
  summary["i2v_frame0_psnr_db"] = [float(p) for p in psnr]
  timings["i2v"] = time.perf_counter() - t

  t = time.perf_counter()
  evaluation = {}
  if demo.evaluate:
    say("[8/8] evaluation: frame digits (classifier on real digits) and motion direction")
    classifier = evaluate_motion.frame_classifier(demo.digit_size)
    evaluation = evaluate_motion.evaluate_videos(videos, named, moves, demo.digit_size,
                                                 classifier)
    with np.load(i2v_npz) as data:
      evaluation["i2v"] = evaluate_motion.evaluate_videos(
          data["videos"], data["digits"], data["directions"], demo.digit_size, classifier)
    evaluation["i2v"]["frame0_psnr_db"] = float(np.mean(psnr))
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
      json.dump(evaluation, f, indent=2)
  timings["evaluation"] = time.perf_counter() - t
  timings["total"] = time.perf_counter() - start
  summary.update(timings_seconds=timings, evaluation=evaluation,
                 outputs=dict(videos=npz, gifs=os.path.join(workdir, "videos"), i2v=i2v_npz))
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=str)
  say(text_demo.format_summary("prompt-to-motion", summary))
  return summary
