"""The digits demo, stage by stage (`run_demo(config, workdir)`; see configs/demo.py).

  1. data       scikit-learn digits, bicubic-upsampled to config.data.image_size
  2. tokenizer  the tokenizer task of the training loop (grn_jax/demo/train.py), checkpoints in
                workdir/tokenizer_train -> workdir/tokenizer (Orbax params)
  3. labels     every digit -> HBQ labels int32 [1797, h, w, D] -> workdir/digits_labels.npz
  4. GRN        the C2I task of the training loop on the in-memory labels
                -> workdir/checkpoints; the sampling params (config.sample.params) also go to
                workdir/grn_params. With config.train.eval_every_steps > 0 the loop also
                computes the digits classifier's Frechet distance and accuracy of
                config.eval.num_samples samples during training (grn_jax/evaluation/online.py,
                the classifier's features in workdir/eval/): the curve in TensorBoard
                (eval/frechet_distance) and in summary.json (online_evaluation)
  5. samples    default sampler settings, through grn_jax.sampling.generate (the PNGs in
                workdir/samples/) -> workdir/samples.npz (images uint8 [N, H, W, 3], labels,
                steps, nfe int32 [N], entropy float32 [N], per_class per class), grid.png
                (rows = classes), refinement.gif + refinement.png (grn_jax.sampling.animate);
                with demo.compare_adaptive also samples_adaptive.npz (entropy-adaptive steps)
  6. evaluation digits-classifier accuracy, Frechet distance and within-class diversity
                -> workdir/evaluation.json

Every stage up to the GRN reuses what an earlier run left in the workdir, so an interrupted
demo resumes; the samples are drawn anew by every run (they depend on config.sample).
"""

import json
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from grn_jax import checkpointing
from grn_jax import config_check
from grn_jax import models
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.demo import digits
from grn_jax.demo import images as image_files
from grn_jax.demo import train as demo_train
from grn_jax.sampling import animate
from grn_jax.sampling import c2i as c2i_sampling
from grn_jax.sampling import generate

DEMO_FIELDS = ("grid_per_class", "animation_classes", "gif_frame_ms", "compare_adaptive",
               "evaluate")


def _say(message: str) -> None:
  print(message, flush=True)


def validate_demo_config(config: ml_collections.ConfigDict) -> None:
  """Fails at start-up naming the field."""
  config_check.check_fields(config.demo, "demo", DEMO_FIELDS)
  if config.data.source != "arrays":
    raise ValueError(f"the demo trains on in-memory labels: config.data.source must be "
                     f"'arrays', got {config.data.source!r}.")
  if config.data.image_size != 16 * config.model.input_size:
    raise ValueError(f"config.data.image_size={config.data.image_size} must be 16 * "
                     f"config.model.input_size={config.model.input_size}.")
  tokenizer_io.check_latent_dim(config)
  if config.model.num_classes != digits.NUM_CLASSES:
    raise ValueError(f"config.model.num_classes must be {digits.NUM_CLASSES} for the digits, "
                     f"got {config.model.num_classes}.")
  if config.demo.grid_per_class > config.sample.per_class:
    raise ValueError(f"config.demo.grid_per_class={config.demo.grid_per_class} exceeds "
                     f"config.sample.per_class={config.sample.per_class}.")
  bad = [c for c in config.demo.animation_classes if not 0 <= c < digits.NUM_CLASSES]
  if bad or not config.demo.animation_classes:
    raise ValueError(f"config.demo.animation_classes must be digits 0..9, got "
                     f"{config.demo.animation_classes}.")


def tokenizer_stage(config, workdir: str, images: np.ndarray):
  """Restores workdir/tokenizer or trains and saves it. Returns (params, metrics or None)."""
  path = os.path.join(workdir, "tokenizer")
  if os.path.exists(path):
    _say(f"[2/6] tokenizer: reusing {path}")
    return checkpointing.restore_params(path), None
  _say(f"[2/6] tokenizer: training {demo_train.tokenizer_steps(config, len(images))} steps on "
       f"{len(images)} digits")
  params, metrics = demo_train.train_tokenizer(config, workdir, images)
  checkpointing.save_params(path, params)
  return params, metrics


def labels_stage(config, workdir: str, params, images: np.ndarray, classes: np.ndarray):
  """HBQ labels of every digit (cached in workdir/digits_labels.npz)."""
  path = os.path.join(workdir, "digits_labels.npz")
  if os.path.exists(path):
    with np.load(path) as data:
      if data["labels"].shape[0] == len(images):
        return data["labels"]
  encode = tokenizer_io.make_encode_fn(models.build_tokenizer(config.tokenizer),
                                       config.model.hbq_rounds, config.model.label_mode)
  labels = tokenizer_io.batched(encode, params, images, 256)
  np.savez_compressed(path, labels=labels, class_labels=classes)
  return labels


def reconstruction_stage(config, params, labels: np.ndarray) -> np.ndarray:
  """Decoded HBQ labels: what the tokenizer can represent. uint8 [N, H, W, 3]."""
  decode = tokenizer_io.make_decode_fn(models.build_tokenizer(config.tokenizer),
                                       config.model.hbq_rounds, config.model.label_mode)
  return np.asarray(tokenizer_io.to_uint8(tokenizer_io.batched(decode, params, labels, 256)))


def grn_stage(config, workdir: str, labels: np.ndarray, classes: np.ndarray):
  """Trains (or resumes) the GRN; returns (the final TrainState, its online evaluations)."""
  online = (f", digits Frechet distance of {config.eval.num_samples} samples every "
            f"{config.train.eval_every_steps} steps" if config.train.eval_every_steps > 0 else "")
  _say(f"[4/6] GRN: {demo_train.grn_steps(config, len(labels))} steps of batch "
       f"{config.train.global_batch_size} on labels {labels.shape}{online}")
  return demo_train.train_grn(config, workdir, labels, classes)


def sample_stage(config, workdir: str, tok_params) -> dict[str, Any]:
  """Default-setting samples, the grid and the animation; optionally adaptive samples.

  Through the user paths: the sampling params of the training checkpoint
  (generate.load_sampling_params, as `--mode=sample`), sampling/generate.py for the PNGs and
  samples.npz (tokenizer decode and uint8 inside the jitted sampler), and sampling/animate.py on
  the sampler's in-graph trace previews for the animation.
  """
  params = generate.load_sampling_params(config, workdir)
  params_path = os.path.join(workdir, "grn_params")
  if not os.path.exists(params_path):  # for --mode=sample, the notebook and later sessions
    checkpointing.save_params(params_path, params)
  decode_fn = tokenizer_io.TokenizerDecode(models.build_tokenizer(config.tokenizer))
  mesh = sharding.make_mesh(config.mesh)
  outputs = {}
  runs = [("fixed", False, "samples")]
  if config.demo.compare_adaptive:
    runs.append(("adaptive", True, "samples_adaptive"))
  for name, adaptive, stem in runs:
    family = c2i_sampling.C2IGeneration(config, adaptive=adaptive)
    png_dir, path = os.path.join(workdir, stem), os.path.join(workdir, stem + ".npz")
    _say(f"[5/6] sampling {family.num_outputs} digits ({config.sample.per_class} per class), "
         f"{name} steps")
    # The samples depend on the settings of this run: never resume from an earlier run's PNGs.
    shutil.rmtree(png_dir, ignore_errors=True)
    start = time.perf_counter()
    summary = generate.generate(family, params, decode_fn, tok_params, png_dir,
                                batch_size=int(config.sample.batch_size),
                                seed=int(config.sample.seed), mesh=mesh, show_progress=False)
    seconds = time.perf_counter() - start
    generate.write_npz(png_dir, path, family.num_outputs, family.npz_fields)
    outputs[name] = dict(path=path, seconds=seconds, mean_steps=summary["mean_steps"])
  with np.load(outputs["fixed"]["path"]) as data:
    fixed = data["images"]
  fixed = fixed.reshape(digits.NUM_CLASSES, config.sample.per_class, *fixed.shape[1:])
  grid = fixed[:, :config.demo.grid_per_class].reshape(-1, *fixed.shape[2:])
  grid_path = os.path.join(workdir, "grid.png")
  image_files.save_png(image_files.tile_grid(grid, digits.NUM_CLASSES, scale=2), grid_path)
  outputs["grid"] = grid_path

  animated = np.asarray(config.demo.animation_classes, np.int32)
  out = c2i_sampling.sample(config, params, animated, jax.random.key(config.seed + 1),
                            trace=True, trace_previews=True, decode=(decode_fn, tok_params))
  gif, strip = animate.write_animation(jax.device_get(out.trace), np.asarray(out.steps),
                                       os.path.join(workdir, "refinement"),
                                       fps=1000 / config.demo.gif_frame_ms, scale=2)
  outputs["animation"], outputs["strip"] = gif, strip
  return outputs


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs the six stages; returns a summary dict (paths, timings, metrics)."""
  validate_demo_config(config)
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  workdir = os.path.abspath(workdir)
  summary: dict[str, Any] = dict(workdir=workdir, devices=str(jax.devices()))
  timings = {}

  t = time.perf_counter()
  gray, classes = digits.load_digits_gray(config.data.image_size)
  images = digits.gray_to_model(gray)
  _say(f"[1/6] data: {len(images)} digits upsampled to {config.data.image_size}x"
       f"{config.data.image_size}")
  timings["data"] = time.perf_counter() - t

  t = time.perf_counter()
  tok_params, tok_metrics = tokenizer_stage(config, workdir, images)
  timings["tokenizer"] = time.perf_counter() - t
  summary["tokenizer_metrics"] = tok_metrics

  t = time.perf_counter()
  labels = labels_stage(config, workdir, tok_params, images, classes)
  recon = reconstruction_stage(config, tok_params, labels)
  real = np.asarray(tokenizer_io.to_uint8(images))
  mse = np.mean((recon.astype(np.float32) - real.astype(np.float32))**2)
  summary["reconstruction_psnr_db"] = float(10 * np.log10(255.0**2 / max(mse, 1e-10)))
  _say(f"[3/6] labels: {labels.shape} HBQ labels; decoded-label PSNR "
       f"{summary['reconstruction_psnr_db']:.1f} dB")
  timings["labels"] = time.perf_counter() - t

  classifier = None
  if config.demo.evaluate or config.train.eval_every_steps > 0:
    from grn_jax.demo import evaluate  # pylint: disable=g-import-not-at-top
    classifier = evaluate.DigitsClassifier(config.data.image_size)

  t = time.perf_counter()
  run_config = ml_collections.ConfigDict(config.to_dict())
  run_config.tokenizer.checkpoint = os.path.join(workdir, "tokenizer")
  if config.train.eval_every_steps > 0:
    run_config.eval.update(evaluate.write_online_eval_files(classifier,
                                                            os.path.join(workdir, "eval")))
  _, summary["online_evaluation"] = grn_stage(run_config, workdir, labels, classes)
  timings["grn"] = time.perf_counter() - t

  t = time.perf_counter()
  outputs = sample_stage(run_config, workdir, tok_params)
  timings["sampling"] = time.perf_counter() - t

  t = time.perf_counter()
  evaluation = {}
  if config.demo.evaluate:
    _say("[6/6] evaluation: digits classifier on real digits, applied to the samples")
    evaluation["reconstructions"] = evaluate.evaluate_samples(recon, classes, classifier)
    for name in ("fixed", "adaptive"):
      if name in outputs:
        with np.load(outputs[name]["path"]) as data:
          evaluation[name] = evaluate.evaluate_samples(data["images"], data["labels"],
                                                       classifier)
        evaluation[name]["mean_steps"] = outputs[name]["mean_steps"]
        evaluation[name]["sampling_seconds"] = outputs[name]["seconds"]
    with open(os.path.join(workdir, "evaluation.json"), "w") as f:
      json.dump(evaluation, f, indent=2)
  timings["evaluation"] = time.perf_counter() - t
  timings["total"] = time.perf_counter() - start

  summary.update(timings_seconds=timings, evaluation=evaluation,
                 outputs={k: (v["path"] if isinstance(v, dict) else v)
                          for k, v in outputs.items()})
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2, default=str)
  _say(format_summary(summary))
  return summary


def format_summary(summary: dict[str, Any]) -> str:
  out = summary["outputs"]
  lines = ["", f"GRN digits demo finished in {summary['timings_seconds']['total'] / 60:.1f} min "
           f"({summary['workdir']})",
           f"  class grid (rows = digits 0-9):  {out['grid']}",
           f"  refinement animation:            {out['animation']}",
           f"  refinement steps (PNG strip):    {out['strip']}",
           f"  samples (default sampler):       {out['fixed']}"]
  if "adaptive" in out:
    lines.append(f"  samples (adaptive steps):        {out['adaptive']}")
  lines.append(f"  tokenizer / GRN checkpoints:     {summary['workdir']}/tokenizer, "
               f"{summary['workdir']}/checkpoints")
  stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in
                     summary["timings_seconds"].items() if name != "total")
  lines.append(f"  stage timings:                   {stages}")
  for name, result in summary["evaluation"].items():
    steps = f", mean steps {result['mean_steps']:.1f}" if "mean_steps" in result else ""
    lines.append(f"  {name:<16} classifier accuracy {result['accuracy']:.3f}, Frechet distance "
                 f"{result['frechet_distance']:.2f}, within-class diversity "
                 f"{result['within_class_diversity']:.2f}{steps}")
  curve = summary["online_evaluation"]
  if curve:
    points = ", ".join(f"{e['step']}: {e['eval/frechet_distance']:.2f}" for e in curve)
    lines.append(f"  during training (step: Frechet distance of {curve[0]['eval/num_samples']} "
                 f"samples): {points}")
  if summary["evaluation"]:
    real = next(iter(summary["evaluation"].values()))
    lines.append(f"  (real held-out digits: accuracy {real['real_test_accuracy']:.3f}, "
                 f"Frechet distance {real['real_floor']:.2f}, within-class diversity "
                 f"{real['real_within_class_diversity']:.2f})")
  return "\n".join(lines)
