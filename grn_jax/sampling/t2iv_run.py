r"""Prompt to image, prompt to video, image to video: the `--mode=t2i|t2v|i2v` commands.

  python -m grn_jax.main --mode=t2i --config=configs/t2iv.py:variant=2B,task=t2i \
      --prompt="a red fox in the snow" --workdir=DIR --config.sample.checkpoint=GRN_PARAMS
  python -m grn_jax.main --mode=t2v --config=configs/t2iv.py:task=t2v --prompts=FILE ...
  python -m grn_jax.main --mode=i2v --config=configs/t2iv.py:task=t2v --image=IMG --prompt=...

Writes into `config.sample.output_dir` (default WORKDIR/<mode>) for output i (prompt i):
`{i:06d}.png` (t2i) or `{i:06d}.mp4` and `.gif` (t2v, i2v), and `{i:06d}.json` with the prompt,
the seed, the settings and the steps used; with `--trajectory` also `{i:06d}_refinement.gif`
and `.png` (the refinement of the first frame, sampling/animate.py). Output i is sampled with
the key fold_in(key(config.sample.seed), i): a killed run resumes at the first output without
its JSON and writes what an uninterrupted run writes (sampling/generate.py).

Steps: prompts (the `prompt_suffix` appended, e.g. the official T2V one) and the negative prompt
are encoded by umT5 (`config.text_encoder`) in batches of one length bucket, the encoder is
freed, then every batch of prompts runs one jitted program: the GRN text prefix
(`encode_text`), the refinement loop (sampling/t2iv.py) and the d=64 tokenizer's decode
(`config.tokenizer.frame_chunk` streams long videos). Resolution as the official pipeline:
the aspect ratio `h_div_w` snapped to the nearest template, the pixel bucket `pixels`, frames
min(81, int(duration * 16 + 1)) -> latent frames (frames - 1) // 4 + 1. Image-to-video takes the
aspect ratio of the image, resizes it to cover the grid and crops the centre (official
`transform`), encodes it and fixes latent frame 0 to its labels (sampling/editing.py); the
released T2V model was not trained for that (README).

Prompt files: UTF-8 text, one prompt per line; blank lines and lines starting with '#' are
skipped, prompts longer than `text_encoder.max_length` tokens are skipped (counted and logged,
with their line numbers); a file that is not UTF-8 or holds no prompt is an error.
"""

import dataclasses
import os
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from grn_jax import checkpointing
from grn_jax import config_check
from grn_jax import random_init
from grn_jax import resolution
from grn_jax import sharding
from grn_jax import text
from grn_jax import tokenizer_io
from grn_jax.models import build_t2iv
from grn_jax.models import build_tokenizer
from grn_jax.models import grn_t2iv
from grn_jax.models import umt5
from grn_jax.sampling import animate
from grn_jax.sampling import editing
from grn_jax.sampling import generate
from grn_jax.sampling import outputs
from grn_jax.sampling import t2iv

MODES = {"t2i": "t2i", "t2v": "t2v", "i2v": "t2v"}  # mode -> the config task it needs
SAMPLE_FIELDS = ("num_steps", "schedule_tmax", "snr_shift", "cfg_interval", "cfg_scale",
                 "temperature", "pixels", "h_div_w", "duration", "prompt_suffix",
                 "negative_prompt", "adaptive", "warmup_steps", "min_steps", "max_steps",
                 "entropy_k", "entropy_b", "prompt", "prompts", "image", "trajectory", "seed",
                 "batch_size", "fps", "checkpoint", "random_init", "output_dir")
SECTIONS = ("task", "model", "tokenizer", "text_encoder", "sample", "mesh", "sharding_rules")
# The training sections of configs/t2iv.py (read by trainers/t2iv.py, checked there).
TRAINING_SECTIONS = ("mode", "seed", "data", "packing", "corruption", "train", "optim")
OFFICIAL_T2V_NEGATIVE = "t2v_infer"  # config value naming text.T2V_NEGATIVE_PROMPT


def validate_config(config: ml_collections.ConfigDict, mode: str) -> None:
  """Checks the mode against config.task and every section (errors name the field)."""
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; the prompt modes are {tuple(MODES)}.")
  config_check.check_fields(config, "", SECTIONS, optional=TRAINING_SECTIONS)
  if config.task != MODES[mode]:
    raise ValueError(f"--mode={mode} needs a config with task={MODES[mode]} "
                     f"(--config=configs/t2iv.py:task={MODES[mode]}), got task={config.task!r}.")
  config_check.check_fields(config.sample, "sample", SAMPLE_FIELDS)
  grn_t2iv.validate_t2iv_config(config.model)
  umt5.validate_encoder_config(config.text_encoder)
  tokenizer_io.check_latent_dim(config)
  if config.text_encoder.dim != config.model.text_dim:
    raise ValueError(f"config.text_encoder.dim={config.text_encoder.dim} != "
                     f"config.model.text_dim={config.model.text_dim}.")
  sample = config.sample
  if sample.temperature <= 0:
    raise ValueError(f"config.sample.temperature must be > 0, got {sample.temperature}.")
  if sample.batch_size < 1 or sample.num_steps < 1 or sample.fps <= 0:
    raise ValueError("config.sample.batch_size, num_steps and fps must be positive.")
  if bool(sample.prompt) == bool(sample.prompts):
    raise ValueError("give exactly one of --prompt=TEXT and --prompts=FILE "
                     "(config.sample.prompt / config.sample.prompts).")
  if (mode == "i2v") != bool(sample.image):
    raise ValueError("--image=FILE (config.sample.image) is what --mode=i2v animates; the "
                     "other modes take none." if sample.image else
                     "--mode=i2v needs --image=FILE (config.sample.image).")
  if mode != "t2i" and sample.duration <= 0:
    raise ValueError(f"--mode={mode} makes a video: config.sample.duration must be > 0 s.")
  if not sample.checkpoint and not sample.random_init:
    raise ValueError("config.sample.checkpoint is empty: convert the released GRN_T2I_2B.pth / "
                     "GRN_T2V_2B.pth with `python -m grn_jax.convert --kind=t2iv` and pass "
                     "--config.sample.checkpoint=DIR (or config.sample.random_init=True for a "
                     "test run).")


def latent_shape(sample: ml_collections.ConfigDict, mode: str,
                 h_div_w: float | None = None) -> tuple[tuple[int, int, int], float]:
  """((latent frames, h, w), the aspect template) of the mode's outputs."""
  template = resolution.nearest_template(sample.h_div_w if h_div_w is None else h_div_w)
  height, width = resolution.latent_grid(template, sample.pixels)
  frames = 1 if mode == "t2i" else resolution.latent_frames(resolution.num_frames(
      sample.duration))
  return (frames, height, width), template


def read_prompts(sample: ml_collections.ConfigDict,
                 tokenizer: text.PromptTokenizer) -> list[str]:
  """The prompts of config.sample.prompt or the file config.sample.prompts (see docstring)."""
  if sample.prompt:
    lines = [(1, sample.prompt)]
    source = "--prompt"
  else:
    source = sample.prompts
    try:
      with open(source, encoding="utf-8") as f:
        lines = list(enumerate(f.read().splitlines(), start=1))
    except UnicodeDecodeError as e:
      raise ValueError(f"prompt file {source} is not UTF-8 text ({e}); save it as UTF-8, one "
                       "prompt per line.") from e
  lines = [(n, line.strip()) for n, line in lines]
  lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
  counts = tokenizer.num_tokens([line for _, line in lines]) if lines else []
  long = [n for (n, _), count in zip(lines, counts) if count > tokenizer.max_length]
  if long:
    logging.warning("%s: skipped %d prompts longer than text_encoder.max_length=%d tokens "
                    "(lines %s); shorten them to keep them.", source, len(long),
                    tokenizer.max_length, long)
  prompts = [line for (n, line) in lines if n not in long]
  if not prompts:
    raise ValueError(f"{source} holds no usable prompt (one per line; '#' starts a comment"
                     f"{'; ' + str(len(long)) + ' too long' if long else ''}).")
  return prompts


def load_image(path: str, height: int, width: int) -> np.ndarray:
  """uint8 [height, width, 3]: resized (Lanczos) to cover the size, the centre cropped."""
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
  except (OSError, ValueError) as e:
    raise ValueError(f"config.sample.image={path!r} is not a readable image ({e}).") from e
  scale = max(height / im.height, width / im.width)
  size = (max(width, round(im.width * scale)), max(height, round(im.height * scale)))
  pixels = np.asarray(im.resize(size, Image.LANCZOS))
  y, x = (pixels.shape[0] - height) // 2, (pixels.shape[1] - width) // 2
  return pixels[y:y + height, x:x + width]


def image_aspect(path: str) -> float:
  with Image.open(path) as im:
    return im.height / im.width


def encode_prompts(text_cfg: ml_collections.ConfigDict, prompts: Sequence[str],
                   negative: str, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
  """umT5 features of the valid tokens: per prompt float32 [L_i, dim], and the negative
  prompt's [L, dim]. The encoder is freed when this returns."""
  encoder = text.PromptEncoder.from_config(text_cfg)
  features = []
  for first in range(0, len(prompts), batch_size):
    batch, mask = encoder(list(prompts[first:first + batch_size]))
    batch = np.asarray(batch, np.float32)
    features += [f[m] for f, m in zip(batch, mask)]
  neg, neg_mask = encoder([negative])
  return features, np.asarray(neg, np.float32)[0][neg_mask[0]]


@random_init.program
def _init_grn(module: grn_t2iv.GRNT2IV, key: jax.Array) -> Any:
  """The module's boxed params from key (compiled once per module and process)."""
  x = (jnp.zeros((1, 1, 1, 1, module.labels_per_token), jnp.int32), jnp.zeros((1,)),
       jnp.zeros((1, 1, module.text_dim)), jnp.ones((1, 1), bool))
  return module.init(key, *x)["params"]


def load_grn_params(config: ml_collections.ConfigDict, module: grn_t2iv.GRNT2IV) -> Any:
  """GRN params: the converted directory config.sample.checkpoint (checked against the model),
  or random ones (config.sample.random_init, tests only)."""
  if config.sample.random_init:
    logging.warning("config.sample.random_init=True: RANDOM GRN weights (tests only).")
    return nn.unbox(_init_grn(module, jax.random.key(config.sample.seed)))
  params = checkpointing.restore_params(config.sample.checkpoint)
  abstract = nn.unbox(_init_grn.shape(module))
  checkpointing.check_tree_matches(params, abstract, what="GRN T2I/T2V params")
  return params


def _padded(rows: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
  """Compact features [L_i, dim] -> float32 [B, length, dim] and mask bool [B, length]."""
  out = np.zeros((len(rows), length, rows[0].shape[-1]), np.float32)
  mask = np.zeros((len(rows), length), bool)
  for r, row in enumerate(rows):
    out[r, :len(row)], mask[r, :len(row)] = row, True
  return out, mask


@dataclasses.dataclass(frozen=True)
class PromptRows:
  """Hashable rows_fn of sampling/generate.py: text prefix, refinement and decode in one program."""
  sampler: t2iv.T2IVSampler
  module: grn_t2iv.GRNT2IV
  rules: tuple

  def __call__(self, params, conditions, keys, settings, decode_params=None):
    def encode(features, mask):
      with nn.logical_axis_rules(self.rules):
        return self.module.apply({"params": params}, features, mask, method="encode_text")
    fixed = {k: conditions[k] for k in ("fixed_labels", "fixed_mask") if k in conditions}
    return self.sampler(params, encode(conditions["features"], conditions["mask"]),
                        encode(conditions["neg_features"], conditions["neg_mask"]), settings,
                        keys, decode_params=decode_params, **fixed)


class T2IVGeneration:
  """The generation family (sampling/generate.py) of prompts: output i is prompt i."""

  npz_fields: dict[str, str] = {}

  def __init__(self, config: ml_collections.ConfigDict, mode: str, prompts: Sequence[str],
               features: dict[int, np.ndarray], negative: np.ndarray,
               shape: tuple[int, int, int], h_div_w: float, fixed=None, trace: bool = False):
    """features: the umT5 features of the prompts still to generate (index -> [L_i, dim]);
    fixed: None or (labels, mask) [1, T, h, w, D] of every row (image-to-video)."""
    self.config, self.mode, self.prompts = config, mode, list(prompts)
    self.features, self.negative, self.fixed = features, negative, fixed
    self.num_outputs = len(self.prompts)
    self.module = build_t2iv(config.model)
    self.rules = sharding.rules_from_config(config.sharding_rules)
    self.shape, self.h_div_w, self.trace = shape, h_div_w, trace
    sample = config.sample
    self.settings = t2iv.T2IVSettings(
        cfg_scale=sample.cfg_scale, cfg_interval=sample.cfg_interval,
        temperature=sample.temperature, snr_shift=sample.snr_shift, entropy_k=sample.entropy_k,
        entropy_b=sample.entropy_b)
    self.writer = outputs.VisualWriter(mode != "t2i", sample.fps, self.record())

  def sampler(self, decode_fn, trace: bool = False) -> t2iv.T2IVSampler:
    sample = self.config.sample
    return t2iv.make_sampler(
        self.module, shape=self.shape, h_div_w=self.h_div_w, num_steps=sample.num_steps,
        schedule_steps=sample.schedule_tmax, adaptive=sample.adaptive,
        warmup_steps=sample.warmup_steps, min_steps=sample.min_steps,
        max_steps=sample.max_steps, decode_fn=decode_fn, trace=trace, trace_previews=trace,
        rules=self.rules)

  def conditions(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    rows = [self.features[int(i)] for i in indices]
    buckets = self.config.text_encoder.length_buckets
    features, mask = _padded(rows, text.bucket_length(max(len(r) for r in rows), buckets))
    neg, neg_mask = _padded([self.negative] * len(rows), len(self.negative))
    out = dict(features=features, mask=mask, neg_features=neg, neg_mask=neg_mask)
    if self.fixed is not None:
      out["fixed_labels"] = np.repeat(self.fixed[0], len(rows), axis=0)
      out["fixed_mask"] = np.repeat(self.fixed[1], len(rows), axis=0)
    return out

  def rows_fn(self, decode_fn: Any) -> PromptRows:
    return PromptRows(self.sampler(decode_fn, self.trace), self.module, self.rules)

  def metadata(self, index: int) -> dict[str, Any]:
    return dict(prompt=self.prompts[index])

  def place_params(self, params: Any, mesh) -> Any:
    abstract = {"params": _init_grn.shape(self.module)}
    shardings = sharding.logical_shardings(abstract, mesh, self.config.sharding_rules)["params"]
    return jax.device_put(params, shardings)

  def record(self) -> dict[str, Any]:
    sample = self.config.sample
    settings = {k: sample[k] for k in SAMPLE_FIELDS if k not in (
        "prompt", "prompts", "output_dir", "batch_size", "checkpoint", "trajectory")}
    return dict(mode=self.mode, model=self.config.model.name, latent_shape=list(self.shape),
                h_div_w_template=self.h_div_w, sample=settings)


def abstract_program(config: ml_collections.ConfigDict, mode: str, *, batch: int,
                     text_length: int, negative_length: int | None = None
                     ) -> tuple[t2iv.T2IVSampler, tuple, dict]:
  """The mode's sampler (refinement, guidance, the tokenizer decode to uint8 in one program) and
  abstract inputs for it: `sampler.lower(*args, **kwargs)` lowers the whole program without
  creating any array (AOT memory figures, e.g. the 2B at 1024^2 or 480p x 81 frames with CFG in
  bf16). The text caches are those of `batch` prompts of `text_length` tokens (a length bucket)
  and of the negative prompt (`negative_length`, default text_length); i2v adds frame 0's fixed
  labels. Shardings are the caller's (e.g. jax.ShapeDtypeStruct(..., sharding=...)).

  Returns:
    (sampler, (params, text_cond, text_uncond, settings, key), dict(decode_params[,
    fixed_labels, fixed_mask])), all inputs jax.ShapeDtypeStruct pytrees.
  """
  if mode not in MODES:
    raise ValueError(f"unknown mode {mode!r}; the prompt modes are {tuple(MODES)}.")
  shape, template = latent_shape(config.sample, mode)
  module = build_t2iv(config.model)
  tok_module = build_tokenizer(config.tokenizer)
  sample = config.sample
  sampler = t2iv.make_sampler(
      module, shape=shape, h_div_w=template, num_steps=sample.num_steps,
      schedule_steps=sample.schedule_tmax, adaptive=sample.adaptive,
      warmup_steps=sample.warmup_steps, min_steps=sample.min_steps, max_steps=sample.max_steps,
      decode_fn=tokenizer_io.Uint8Decode(tokenizer_io.TokenizerDecode(tok_module)),
      rules=sharding.rules_from_config(config.sharding_rules))
  params = nn.unbox(_init_grn.shape(module))
  tok_params = tokenizer_io.abstract_params(tok_module)

  def text_cache(rows: int, length: int):
    features = jax.ShapeDtypeStruct((rows, length, module.text_dim), jnp.float32)
    mask = jax.ShapeDtypeStruct((rows, length), jnp.bool_)
    return jax.eval_shape(t2iv.encode_text_fn(module), params, features, mask)

  scalar = jax.ShapeDtypeStruct((), jnp.float32)
  settings = jax.tree.map(lambda _: scalar, t2iv.T2IVSettings())
  key = jax.eval_shape(lambda: jax.random.key(0))
  kwargs = dict(decode_params=tok_params)
  if mode == "i2v":
    labels = jax.ShapeDtypeStruct((batch,) + shape + (module.labels_per_token,), jnp.int32)
    kwargs.update(fixed_labels=labels, fixed_mask=labels.update(dtype=jnp.bool_))
  return sampler, (params, text_cache(batch, text_length),
                   text_cache(1, negative_length or text_length), settings, key), kwargs


class FirstFrameDecode:
  """decode_fn of the refinement previews: the first frame only (uint8 [B, H, W, 3])."""

  def __init__(self, inner):
    self.inner = inner

  def __call__(self, params, latent):
    return self.inner(params, latent[:, :1])[:, 0]


def write_trajectories(family: T2IVGeneration, params, tok_module, tok_params, out_dir: str,
                       indices: Sequence[int], seed: int) -> list[str]:
  """`{i:06d}_refinement.gif/.png` of outputs `indices` (sampled again with their keys, traced:
  the same samples as the outputs)."""
  sampler = family.sampler(FirstFrameDecode(tokenizer_io.TokenizerDecode(tok_module)),
                           trace=True)
  rows = PromptRows(sampler, family.module, family.rules)
  written = []
  batch = family.config.sample.batch_size
  for first in range(0, len(indices), batch):
    chunk = np.asarray(indices[first:first + batch])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.asarray(chunk))
    out = jax.device_get(rows(params, family.conditions(chunk), keys, family.settings,
                              tok_params))
    trace = dict(input_images=out.trace.previews["input_images"],
                 pred_images=out.trace.previews["pred_images"], keep=out.trace.keep[:, :, 0],
                 entropy=out.trace.entropy, keep_ratio=out.trace.scale)
    for r, index in enumerate(chunk):
      one = {k: v[:, r:r + 1] for k, v in trace.items()}
      prefix = os.path.join(out_dir, f"{int(index):06d}_refinement")
      written += animate.write_animation(one, out.steps[r:r + 1], prefix)
  return written


def run(mode: str, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The `--mode=t2i|t2v|i2v` entry point (module docstring); returns generate's summary."""
  validate_config(config, mode)
  sample = config.sample
  out_dir = sample.output_dir or os.path.join(workdir, mode)
  os.makedirs(out_dir, exist_ok=True)
  tokenizer = text.PromptTokenizer.from_config(config.text_encoder)
  prompts = read_prompts(sample, tokenizer)
  shape, template = latent_shape(sample, mode, image_aspect(sample.image) if sample.image
                                 else None)
  negative = (text.T2V_NEGATIVE_PROMPT if sample.negative_prompt == OFFICIAL_T2V_NEGATIVE
              else sample.negative_prompt)
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer, seed=sample.seed)
  fixed = None
  if mode == "i2v":
    height, width = (s * resolution.TOKENIZER_STRIDE for s in shape[1:])
    image = load_image(sample.image, height, width)
    labels = tokenizer_io.encode_labels(tok_module, tok_params, image[None],
                                        config.model.hbq_rounds, "bit")
    fixed = editing.image_to_video(np.asarray(labels), shape[0])
  family = T2IVGeneration(config, mode, prompts, {}, np.zeros((1, config.text_encoder.dim),
                                                              np.float32), shape, template, fixed)
  # umT5 runs only for the outputs still to write (missing or damaged: generate regenerates
  # exactly those), then it is freed.
  todo = [i for i, _ in generate.invalid_outputs(out_dir, family)]
  if todo:
    encoded, family.negative = encode_prompts(
        config.text_encoder, [prompts[i] + sample.prompt_suffix for i in todo], negative,
        sample.batch_size)
    family.features = dict(zip(todo, encoded))
  params = load_grn_params(config, family.module)
  summary = generate.generate(family, params, tokenizer_io.TokenizerDecode(tok_module),
                              tok_params, out_dir, batch_size=sample.batch_size,
                              seed=sample.seed, mesh=sharding.make_mesh(config.mesh))
  if sample.trajectory and summary["generated"]:
    summary["trajectories"] = write_trajectories(family, params, tok_module, tok_params, out_dir,
                                                 list(range(summary["start"], len(prompts))),
                                                 sample.seed)
  print(f"{mode}: {summary['total']} outputs in {out_dir} ({summary['generated']} generated now, "
        f"mean steps {summary['mean_steps']:.2f}, mean NFE {summary['mean_nfe']:.2f})")
  return summary
