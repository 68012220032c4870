"""The stages the prompt-to-digit and prompt-to-motion demos share (grn_jax/demo/t2i.py, t2v.py).

  tokenizer  the tokenizer task of the loop on the demo's images or clips in memory
             (config.tokenizer_train: train, optim, reconstruction, sharding_rules)
             -> workdir/tokenizer_train/checkpoints, the params -> workdir/tokenizer
  labels     HBQ bit labels uint8 [N, T, h, w, D] of every image / clip (cached npz)
  text       workdir/text_tokenizer.json over the demo's words and the frozen random umT5
  GRN        the T2I / T2V task of the loop (trainers/t2iv.py) on CaptionedArrays
             -> workdir/checkpoints; the sampling params (config.demo.sample_params) ->
             workdir/grn_params
"""

import os
import shutil
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np

from grn_jax import checkpointing
from grn_jax import config_check
from grn_jax import models
from grn_jax import tokenizer_io
from grn_jax.data import captioned
from grn_jax.data import packing
from grn_jax.demo import captions
from grn_jax.demo import train as demo_train
from grn_jax.demo import text_features
from grn_jax.trainers import loop
from grn_jax.trainers import state as state_lib
from grn_jax.trainers import t2iv as t2iv_task
from grn_jax.trainers import tokenizer as tokenizer_task

TOKENIZER_TRAIN_SECTIONS = ("train", "optim", "reconstruction", "sharding_rules")
PSNR_EXAMPLES = 1024   # the decoded-label PSNR's sample (decoding every clip took 20 s)
DEMO_SECTIONS = ("tokenizer_train", "demo", "sample")  # beside the T2I/T2V task's sections
COMMON_DEMO_FIELDS = ("sample_params", "filler_prob")
DEMO_FIELDS = {
    "t2i": ("image_size", "captions_per_image", "per_digit", "grid_per_digit", "evaluate"),
    "t2v": ("image_size", "digit_size", "captions_per_clip", "per_direction", "gif_frame_ms",
            "i2v_images", "drop_prob", "evaluate"),
}


def say(message: str) -> None:
  print(message, flush=True)


def tokenizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The demo's tokenizer-task config (configs/tokenizer.py layout), data in memory."""
  sections = config.tokenizer_train
  config_check.check_fields(sections, "tokenizer_train", TOKENIZER_TRAIN_SECTIONS)
  data = dict(source="arrays", name="sklearn_digits", split="train", data_dir="",
              image_size=config.demo.image_size, random_flip=False, num_workers=0,
              synthetic_seed=0, max_bad_images=100)
  return ml_collections.ConfigDict(dict(
      task="tokenizer", mode="train", seed=config.seed, tokenizer=config.tokenizer.to_dict(),
      data=data, train=sections.train.to_dict(), optim=sections.optim.to_dict(),
      reconstruction=dict(sections.reconstruction.to_dict(), hbq_rounds=config.model.hbq_rounds),
      mesh=config.mesh.to_dict(), sharding_rules=sections.sharding_rules))


def demo_fields(task: str) -> tuple[str, ...]:
  return DEMO_FIELDS[task]


def validate_config(config: ml_collections.ConfigDict, demo_fields: Sequence[str]) -> None:
  """The whole demo config: the T2I/T2V task's sections, the tokenizer run, the demo fields."""
  t2iv_task.validate_config(config, extra_sections=DEMO_SECTIONS)
  config_check.check_fields(config.demo, "demo", tuple(demo_fields) + COMMON_DEMO_FIELDS)
  if config.mode != "demo":
    raise ValueError(f"config.mode must be 'demo' for the text demos, got {config.mode!r}.")
  try:
    tokenizer_task.validate_config(tokenizer_config(config))
  except ValueError as e:
    raise ValueError(f"config.tokenizer_train (the demo's tokenizer run): {e}") from e
  tokenizer_io.check_latent_dim(config)
  if config.text_encoder.dim != config.model.text_dim:
    raise ValueError(f"config.text_encoder.dim={config.text_encoder.dim} != "
                     f"config.model.text_dim={config.model.text_dim}.")
  if config.data.source != "arrays":
    raise ValueError(f"the demos train on captioned labels in memory: config.data.source must "
                     f"be 'arrays', got {config.data.source!r}.")
  if config.demo.image_size % 16:
    raise ValueError(f"config.demo.image_size={config.demo.image_size} must be a multiple of 16.")
  for field in ("filler_prob", "drop_prob"):
    if field in config.demo and not 0.0 <= config.demo[field] <= 1.0:
      raise ValueError(f"config.demo.{field} must be in [0, 1], got {config.demo[field]}.")
  which = config.demo.sample_params
  if which != "params" and not (which.startswith("ema_") and
                                int(which[4:]) < len(config.train.ema_decays)):
    raise ValueError(f"config.demo.sample_params must be 'params' or 'ema_<i>' with i < "
                     f"{len(config.train.ema_decays)} EMAs, got {which!r}.")


def tokenizer_stage(config, workdir: str, media: np.ndarray, tag: str):
  """Restores workdir/tokenizer or trains it. media float32 [N, (T,) S, S, 3] in [-1, 1].
  Returns (params, the last logged metrics or None)."""
  path = os.path.join(workdir, "tokenizer")
  if os.path.exists(path):
    say(f"{tag} tokenizer: reusing {path}")
    return checkpointing.restore_params(path), None
  run = tokenizer_config(config)
  steps = state_lib.total_steps(run, len(media))
  say(f"{tag} tokenizer: training {steps} steps on {len(media)} examples {media.shape[1:]}")
  bar = demo_train.ProgressBar("tokenizer", steps)
  try:
    run_dir = os.path.join(workdir, demo_train.TOKENIZER_RUN)
    # A stop signal raises (exit 75) instead of saving a half-trained tokenizer as the result.
    state = loop.fit(run, run_dir, dataset=media, hooks=[bar]).raise_if_stopped(run_dir)
  finally:
    bar.close()
  params = jax.device_get(state.params)
  checkpointing.save_params(path, params)
  metrics = None if bar.scalars is None else {k: bar.scalars[k]
                                              for k in demo_train.TOKENIZER_METRICS}
  return params, metrics


def labels_stage(config, workdir: str, params, media: np.ndarray, name: str
                 ) -> tuple[np.ndarray, float]:
  """HBQ bits uint8 [N, T, h, w, D] of media [N, (T,) S, S, 3] (cached in workdir/name) and
  the PSNR (dB) of the decoded reconstructions of the first PSNR_EXAMPLES."""
  module = models.build_tokenizer(config.tokenizer)
  rounds = config.model.hbq_rounds
  path = os.path.join(workdir, name)
  if os.path.exists(path):
    with np.load(path) as data:
      bits = data["bits"]
  else:
    encode = tokenizer_io.make_encode_fn(module, rounds, "bit")
    bits = tokenizer_io.batched(encode, params, media, 128).astype(np.uint8)
    if bits.ndim == 4:
      bits = bits[:, None]
    np.savez_compressed(path, bits=bits)
  decode = tokenizer_io.make_decode_fn(module, rounds, "bit")
  labels = (bits[:, 0] if media.ndim == 4 else bits)[:PSNR_EXAMPLES]
  recon = tokenizer_io.batched(decode, params, labels.astype(np.int32), 128)
  real = np.asarray(tokenizer_io.to_uint8(media[:PSNR_EXAMPLES]), np.float32)
  mse = np.mean((np.asarray(tokenizer_io.to_uint8(recon), np.float32) - real)**2)
  return bits, float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def begin(config, task: str, workdir: str) -> tuple[str, dict, dict, float]:
  """Checks a demo config (task 't2i' | 't2v') and creates its workdir; returns (the absolute
  workdir, the timings and summary dicts the stages fill, the start time)."""
  validate_config(config, demo_fields(task))
  start = time.perf_counter()
  os.makedirs(workdir, exist_ok=True)
  workdir = os.path.abspath(workdir)
  return workdir, {}, dict(workdir=workdir, devices=str(jax.devices())), start


def media_stages(config, workdir: str, media: np.ndarray, bits_name: str, num_stages: int,
                 summary: dict, timings: dict) -> tuple[Any, np.ndarray]:
  """Stages 2 and 3 of both demos: the tokenizer (trained or reused), then the HBQ bits of the
  media (cached in workdir/bits_name) and their reconstruction PSNR; fills summary and timings.
  Returns (tokenizer params, bits uint8 [N, T, h, w, D])."""
  t = time.perf_counter()
  tok_params, summary["tokenizer_metrics"] = tokenizer_stage(config, workdir, media,
                                                             f"[2/{num_stages}]")
  timings["tokenizer"] = time.perf_counter() - t
  t = time.perf_counter()
  bits, summary["reconstruction_psnr_db"] = labels_stage(config, workdir, tok_params, media,
                                                         bits_name)
  say(f"[3/{num_stages}] labels: bits {bits.shape}; decoded-label PSNR "
      f"{summary['reconstruction_psnr_db']:.1f} dB")
  timings["labels"] = time.perf_counter() - t
  return tok_params, bits


def compact(features: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
  """Padded features [N, L, dim], mask [N, L] -> the valid rows of each, float32 [L_i, dim]."""
  return [np.asarray(f[m], np.float32) for f, m in zip(features, mask)]


def text_stage(config, workdir: str, texts: Sequence[str], prompts: Sequence[str],
               probe_templates: Sequence[str], direction: str | None = None):
  """The demo's tokenizer file and frozen encoder; features of `texts` and of the empty prompt.

  Returns:
    (the text_encoder section the samplers load, the compact features of each text, the empty
    prompt's [l0, dim], text_features.separation of the probe templates' prompts (no stroke,
    `direction`) for the ten digits).
  """
  probes = [captions.fill(t, d, "", direction) for t in probe_templates for d in range(10)]
  words = captions.vocabulary(list(texts) + list(prompts) + probes)
  path = text_features.write_tokenizer(words, workdir)
  encoder = text_features.frozen_encoder(config.text_encoder, path)
  features = compact(*text_features.encode(encoder, texts))
  null = compact(*text_features.encode(encoder, [""]))[0]
  probe_features, probe_mask = text_features.encode(encoder, probes)
  separation = text_features.separation(probe_features, probe_mask, np.tile(np.arange(10),
                                        len(probe_templates)),
                                        np.repeat(np.arange(len(probe_templates)), 10))
  return text_features.encoder_config(config.text_encoder, path), features, null, separation


def grn_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The demo's T2I/T2V-task config: the task's sections only."""
  return ml_collections.ConfigDict({k: config[k] for k in t2iv_task.CONFIG_FIELDS})


def grn_stage(config, workdir: str, dataset: captioned.CaptionedArrays, tag: str) -> Any:
  """Trains (or resumes) the GRN; returns (and saves to workdir/grn_params) the sampling params."""
  run = grn_config(config)
  # An epoch is the packed rows (the loop's count), not the examples.
  rows = captioned.plan_rows(dataset, packing.PackingSpec(**config.packing), config.seed)
  steps = state_lib.total_steps(run, len(rows))
  say(f"{tag} GRN: {steps} steps of {config.train.global_batch_size} packed rows "
      f"(up to {config.packing.max_samples} examples each) on {len(dataset)} captioned examples")
  bar = demo_train.ProgressBar("GRN", steps)
  try:
    state = loop.fit(run, workdir, dataset=dataset, hooks=[bar]).raise_if_stopped(workdir)
  finally:
    bar.close()
  which = config.demo.sample_params
  params = state.params if which == "params" else state.ema_params[int(which[4:])]
  params = jax.device_get(params)
  path = os.path.join(workdir, "grn_params")
  shutil.rmtree(path, ignore_errors=True)   # this run's params replace an earlier run's
  checkpointing.save_params(path, params)
  return params


def sampling_config(config: ml_collections.ConfigDict, encoder_cfg: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """The config of the T2I/T2V sampler (sampling/t2iv_run.py sections) with the demo's encoder."""
  out = ml_collections.ConfigDict({k: config[k] for k in ("task", "model", "tokenizer", "sample",
                                                         "mesh", "sharding_rules")})
  out.text_encoder = encoder_cfg
  return out


def format_summary(name: str, summary: dict[str, Any]) -> str:
  lines = ["", f"GRN {name} demo finished in {summary['timings_seconds']['total'] / 60:.1f} min "
           f"({summary['workdir']})"]
  lines += [f"  {key + ':':<30} {path}" for key, path in summary["outputs"].items()]
  stages = ", ".join(f"{k} {v:.0f} s" for k, v in summary["timings_seconds"].items()
                     if k != "total")
  lines.append(f"  {'stage timings:':<30} {stages}")
  for key, value in summary["evaluation"].items():
    if isinstance(value, float):
      lines.append(f"  {key + ':':<30} {value:.3f}")
  return "\n".join(lines)
