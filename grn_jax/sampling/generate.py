r"""Generation at scale: `python -m grn_jax.main --mode=sample --config=... --workdir=DIR`.

Restores the GRN params (the latest training checkpoint in DIR, EMA `config.sample.params` by
default; or the converted params directory `config.sample.checkpoint`), the tokenizer
(`config.tokenizer.checkpoint`, a converted params directory), and writes
`DIR/samples/{index:06d}.png` plus `DIR/samples.npz` (images uint8 [N, H, W, 3], labels int [N]),
`config.sample.per_class` images per class (ImageNet default 50 -> 50,000 images). Batches are
sharded over the mesh; a killed run resumes from the first batch whose PNGs are missing.
"""

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from grn_jax import checkpointing
from grn_jax import sharding
from grn_jax.models import build_tokenizer
from grn_jax.sampling import api
from grn_jax.sampling import refine


def load_tokenizer(config: ml_collections.ConfigDict):
  """(tokenizer module, params) from config.tokenizer.checkpoint (a converted params dir)."""
  path = config.tokenizer.get("checkpoint", "")
  if not path or path.startswith("hf://") or path.endswith((".ckpt", ".pth", ".pt")):
    raise ValueError(
        f"config.tokenizer.checkpoint={path!r}: sampling images needs the tokenizer as a "
        "converted params directory. Convert the released one with `python -m grn_jax.convert "
        "--kind=tokenizer --src=hf://bytedance-research/GRN/HBQ_image_tokenizer_16dim_M4.ckpt "
        "--dst=DIR --config=...` and pass --config.tokenizer.checkpoint=DIR.")
  tok_cfg = ml_collections.ConfigDict(config.tokenizer.to_dict())
  return build_tokenizer(tok_cfg), checkpointing.restore_params(path)


def load_sampling_params(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """GRN params: config.sample.checkpoint (params dir) or the latest training checkpoint."""
  explicit = config.sample.get("checkpoint", "")
  if explicit:
    return checkpointing.restore_params(explicit)
  step, state = checkpointing.load_train_arrays(workdir)
  which = config.sample.params
  if which == "params":
    params = state["params"]
  elif which.startswith("ema_"):
    emas = state["ema_params"]
    index = int(which[4:])
    params = emas[index] if isinstance(emas, (list, tuple)) else emas[str(index)]
  else:
    raise ValueError(f"config.sample.params must be 'params' or 'ema_<i>', got {which!r}.")
  logging.info("sampling with %s of the training checkpoint at step %d", which, step)
  return params


def class_schedule(num_classes: int, per_class: int) -> np.ndarray:
  """Class of every output index: [0]*per_class + [1]*per_class + ... (int32 [N])."""
  return np.repeat(np.arange(num_classes, dtype=np.int32), per_class)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] float -> uint8 (round half up, as (x + 1) / 2 * 255 + 0.5)."""
  return np.clip((np.asarray(images, np.float32) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def _png_path(out_dir: str, index: int) -> str:
  return os.path.join(out_dir, f"{index:06d}.png")


def first_missing_batch(out_dir: str, total: int, batch: int) -> int:
  """Index of the first batch with a missing PNG (resumption point)."""
  for start in range(0, total, batch):
    if any(not os.path.exists(_png_path(out_dir, i)) for i in range(start, min(start + batch,
                                                                               total))):
      return start // batch
  return -(-total // batch)


def generate(config: ml_collections.ConfigDict, params: Any, decode_fn, decode_params,
             out_dir: str, mesh=None, show_progress: bool = True) -> dict[str, np.ndarray]:
  """Writes PNGs for every index and returns dict(images, labels, steps) of all of them."""
  sample_cfg = config.sample
  labels = class_schedule(int(config.model.num_classes), int(sample_cfg.per_class))
  batch = int(sample_cfg.batch_size)
  mesh = mesh or sharding.make_mesh(config.mesh)
  if batch % mesh.devices.size:
    raise ValueError(f"config.sample.batch_size={batch} must be divisible by the "
                     f"{mesh.devices.size} devices of the mesh.")
  os.makedirs(out_dir, exist_ok=True)
  spec = api.spec_from_config(config)
  sampler = refine.jitted_sampler(api.model_apply(config), spec, decode_fn)
  settings = api.settings_from_config(sample_cfg)
  key = jax.random.key(int(sample_cfg.get("seed", 0)))
  num_batches = -(-len(labels) // batch)
  start = first_missing_batch(out_dir, len(labels), batch)
  steps = np.zeros(len(labels), np.int32)
  iterator = range(start, num_batches)
  if show_progress:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    iterator = tqdm(iterator, initial=start, total=num_batches, desc="sampling", unit="batch")
  with jax.set_mesh(mesh):
    for b in iterator:
      idx = np.arange(b * batch, (b + 1) * batch)
      classes = labels[np.minimum(idx, len(labels) - 1)]
      classes = jax.device_put(classes, sharding.batch_sharding(mesh, 1))
      # One key per batch index: a resumed run draws exactly what the first run would have.
      out = sampler(params, classes, jax.random.fold_in(key, b), settings, decode_params)
      images = to_uint8(jax.device_get(out.images))
      for i, image in zip(idx, images):
        if i < len(labels):
          Image.fromarray(image).save(_png_path(out_dir, int(i)))
      steps[idx[idx < len(labels)]] = np.asarray(out.steps)[: (idx < len(labels)).sum()]
  images = np.stack([np.asarray(Image.open(_png_path(out_dir, i)).convert("RGB"))
                     for i in range(len(labels))])
  return dict(images=images, labels=labels, steps=steps)


def generate_to_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The `--mode=sample` entry point; returns the path of samples.npz."""
  params = load_sampling_params(config, workdir)
  tok_module, tok_params = load_tokenizer(config)
  result = generate(config, params, api.TokenizerDecode(tok_module), tok_params,
                    os.path.join(workdir, "samples"))
  path = os.path.join(workdir, "samples.npz")
  np.savez(path, images=result["images"], labels=result["labels"])
  print(f"wrote {len(result['labels'])} samples to {workdir}/samples/ and {path}")
  return path


def decode_identity_fn():
  """A decode_fn that returns the dequantized latent (for tests and label-only runs)."""
  return _IdentityDecode()


class _IdentityDecode:
  def __call__(self, params, latent):
    del params
    return jnp.asarray(latent)

  def __hash__(self):
    return hash("identity-decode")

  def __eq__(self, other):
    return isinstance(other, _IdentityDecode)
