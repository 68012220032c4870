r"""Generation at scale: `python -m grn_jax.main --mode=sample --config=... --workdir=DIR`.

Restores the GRN params (the converted params directory `config.sample.checkpoint`, or else the
latest training checkpoint in DIR, EMA `config.sample.params` by default) and the tokenizer
(grn_jax.tokenizer_io.load_tokenizer(config.tokenizer)), then writes
`<out>/{index:06d}.png` for every index of the class schedule (`config.sample.per_class` images
of each class in class order; ImageNet default 50 -> 50,000 images) and `<out>/samples.npz`
(images uint8 [N, H, W, 3], labels, steps, nfe int32 [N], entropy float32 [N]: H at the
warm-up step, see fit_entropy); <out> is
`config.sample.output_dir` or DIR/samples.

Image i is sampled with the key fold_in(key(config.sample.seed), i): it does not depend on the
batch size, the mesh or the batch it lands in, so a killed run resumes from the first missing
PNG and reproduces exactly what an uninterrupted run writes. PNGs are written atomically and
carry their class, steps, NFE and H as text chunks (`grn_class`, `grn_steps`, `grn_nfe`,
`grn_entropy`), from
which samples.npz is assembled by streaming (never all images in memory). Batches are sharded
over the mesh (`config.mesh`); GRN params are placed with `config.sharding_rules`.
"""

import functools
import os
import zipfile
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from PIL import PngImagePlugin

from grn_jax import checkpointing
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.models import build_c2i
from grn_jax.sampling import api
from grn_jax.sampling import refine


def load_sampling_params(config: ml_collections.ConfigDict, workdir: str) -> Any:
  """GRN params: config.sample.checkpoint (params dir) or the latest training checkpoint."""
  explicit = config.sample.checkpoint
  if explicit:
    logging.info("sampling with the params directory %s", explicit)
    return checkpointing.restore_params(explicit)
  step, state = checkpointing.load_train_arrays(workdir)
  which = config.sample.params
  if which == "params":
    params = state["params"]
  elif which.startswith("ema_") and which[4:].isdigit():
    emas = state["ema_params"]
    index = int(which[4:])
    try:
      params = emas[index] if isinstance(emas, (list, tuple)) else emas[str(index)]
    except (IndexError, KeyError) as e:
      raise ValueError(f"config.sample.params={which!r}: the checkpoint at step {step} has "
                       f"{len(emas)} EMAs.") from e
  else:
    raise ValueError(f"config.sample.params must be 'params' or 'ema_<i>', got {which!r}.")
  logging.info("sampling with %s of the training checkpoint at step %d", which, step)
  return params


def place_params(config: ml_collections.ConfigDict, params: Any, mesh) -> Any:
  """GRN params on the mesh, sharded by config.sharding_rules (tree checked against the model)."""
  module = build_c2i(config.model)
  size, dim = config.model.input_size, api.spec_from_config(config).label_shape[-1]
  abstract = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, dim),
                                                                      jnp.int32),
                            jnp.zeros((1,)), jnp.zeros((1,), jnp.int32))
  shardings = sharding.logical_shardings(abstract, mesh, config.sharding_rules)["params"]
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  checkpointing.check_tree_matches(params, nn.unbox(abstract)["params"], what="GRN params")
  return jax.device_put(params, shardings)


def class_schedule(num_classes: int, per_class: int, num_images: int = -1) -> np.ndarray:
  """Class of every output index: [0]*per_class + [1]*per_class + ... (int32 [N])."""
  labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
  return labels[:num_images] if num_images > 0 else labels


def png_path(out_dir: str, index: int) -> str:
  return os.path.join(out_dir, f"{index:06d}.png")


def first_missing_index(out_dir: str, total: int) -> int:
  """The first index without a PNG (resumption point); total when all exist."""
  for i in range(total):
    if not os.path.exists(png_path(out_dir, i)):
      return i
  return total


def _save_png(path: str, image: np.ndarray, meta: dict[str, float]) -> None:
  info = PngImagePlugin.PngInfo()
  for k, v in meta.items():
    info.add_text(k, repr(v))
  tmp = path + ".tmp"
  Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
  os.replace(tmp, path)  # atomic: a killed run never leaves a truncated PNG behind


def read_png(path: str) -> tuple[np.ndarray, dict[str, float]]:
  """(uint8 [H, W, 3], metadata dict of the grn_* text chunks: class, steps, nfe, entropy)."""
  with Image.open(path) as im:
    meta = {k: float(v) for k, v in getattr(im, "text", {}).items() if k.startswith("grn_")}
    return np.asarray(im.convert("RGB")), meta


def _global_array(host: np.ndarray, mesh) -> jax.Array:
  """A batch-sharded global array from the same full host array on every process."""
  return jax.make_array_from_callback(host.shape, sharding.batch_sharding(mesh, host.ndim),
                                      lambda idx: host[idx])


def _to_host(x: jax.Array) -> np.ndarray:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


@functools.lru_cache(maxsize=8)
def _batch_runner(sampler):
  """jit(params, classes [B], indices [B], base_key, settings, decode_params) -> outputs."""

  @jax.jit
  def run(params, classes, indices, base_key, settings, decode_params):
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)
    out = sampler(params, classes, keys, settings, decode_params)
    return out.images, out.steps, out.row_nfe, out.entropy

  return run


def generate(config: ml_collections.ConfigDict, params: Any, decode_fn, decode_params,
             out_dir: str, mesh=None, show_progress: bool = True) -> dict[str, Any]:
  """Writes the PNG of every index not yet written; returns a summary.

  Args:
    config: the full config (model, sample, mesh, sharding_rules).
    params: GRN params (numpy or jax).
    decode_fn: hashable decode_fn(decode_params, latent [B, h, w, d]) -> images in [-1, 1].
    decode_params: its params.
    out_dir: where the PNGs go.
    mesh: defaults to sharding.make_mesh(config.mesh).
    show_progress: tqdm progress bar (process 0).

  Returns:
    dict(total, start (first index generated by this call), generated, mean_steps and
    mean_nfe over the images generated by this call).
  """
  sample_cfg = config.sample
  labels = class_schedule(int(config.model.num_classes), int(sample_cfg.per_class),
                          int(sample_cfg.num_images))
  total = len(labels)
  batch = int(sample_cfg.batch_size)
  mesh = mesh or sharding.make_mesh(config.mesh)
  data_devices = int(np.prod([mesh.shape[a] for a in refine.BATCH_AXES if a in mesh.shape]))
  if batch % data_devices:
    raise ValueError(f"config.sample.batch_size={batch} must be divisible by the "
                     f"{data_devices} batch devices of the mesh {dict(mesh.shape)}.")
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(out_dir, exist_ok=True)
  start = first_missing_index(out_dir, total) if writer else 0
  if jax.process_count() > 1:  # process 0 owns the files: every process resumes where it says
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    start = int(multihost_utils.broadcast_one_to_all(np.int32(start)))
  summary = dict(total=total, start=start, generated=0, mean_steps=float("nan"),
                 mean_nfe=float("nan"))
  if start >= total:
    logging.info("all %d samples already exist in %s", total, out_dir)
    return summary
  spec = api.spec_from_config(config)
  sampler = refine.jitted_sampler(api.model_apply(config), spec,
                                  tokenizer_io.Uint8Decode(decode_fn))
  settings = api.settings_from_config(sample_cfg).as_arrays()
  base_key = jax.random.key(int(sample_cfg.seed))
  run = _batch_runner(sampler)

  params = place_params(config, params, mesh)
  decode_params = jax.device_put(decode_params, sharding.replicated(mesh))
  starts = range(start, total, batch)
  iterator = starts
  if show_progress and writer:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    iterator = tqdm(starts, total=len(starts), desc=f"sampling {total - start} images",
                    unit="batch")
  steps_sum, nfe_sum = 0, 0
  with jax.set_mesh(mesh):
    for first in iterator:
      idx = np.arange(first, first + batch)
      valid = idx < total
      classes = labels[np.minimum(idx, total - 1)]
      outputs = run(params, _global_array(classes, mesh),
                    _global_array(idx.astype(np.int32), mesh), base_key, settings,
                    decode_params)
      images, steps, nfe, entropy = (_to_host(x) for x in outputs)
      if writer:
        for i in np.flatnonzero(valid):
          _save_png(png_path(out_dir, int(idx[i])), images[i],
                    dict(grn_class=int(classes[i]), grn_steps=int(steps[i]),
                         grn_nfe=int(nfe[i]), grn_entropy=float(entropy[i])))
      steps_sum += int(steps[valid].sum())
      nfe_sum += int(nfe[valid].sum())
      summary["generated"] += int(valid.sum())
  summary["mean_steps"] = steps_sum / summary["generated"]
  summary["mean_nfe"] = nfe_sum / summary["generated"]
  return summary


def write_npz(out_dir: str, path: str, total: int) -> None:
  """Streams PNGs 0..total-1 into an (uncompressed) npz: images, labels, steps, nfe, entropy."""
  first, _ = read_png(png_path(out_dir, 0))
  header = dict(descr=np.lib.format.dtype_to_descr(np.dtype(np.uint8)), fortran_order=False,
                shape=(total,) + first.shape)
  labels, steps, nfe = (np.zeros(total, np.int32) for _ in range(3))
  entropy = np.zeros(total, np.float32)
  tmp = path + ".tmp"
  with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
    with zf.open("images.npy", "w", force_zip64=True) as f:
      np.lib.format.write_array_header_2_0(f, header)
      for i in range(total):
        image, meta = read_png(png_path(out_dir, i))
        if image.shape != first.shape:
          raise ValueError(f"{png_path(out_dir, i)} has shape {image.shape}, expected "
                           f"{first.shape}; remove stale samples from {out_dir}.")
        f.write(np.ascontiguousarray(image).tobytes())
        labels[i], steps[i], nfe[i], entropy[i] = (
            meta.get(k, -1) for k in ("grn_class", "grn_steps", "grn_nfe", "grn_entropy"))
    for name, arr in (("labels", labels), ("steps", steps), ("nfe", nfe),
                      ("entropy", entropy)):
      with zf.open(f"{name}.npy", "w") as f:
        np.lib.format.write_array(f, arr)
  os.replace(tmp, path)


def generate_to_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The `--mode=sample` entry point; returns the path of samples.npz (or the PNG folder)."""
  out_dir = config.sample.output_dir or os.path.join(workdir, "samples")
  params = load_sampling_params(config, workdir)
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  summary = generate(config, params, tokenizer_io.TokenizerDecode(tok_module), tok_params,
                     out_dir)
  logging.info("sampling summary: %s", summary)
  if jax.process_index() != 0:
    return out_dir
  print(f"{summary['total']} samples in {out_dir} ({summary['generated']} generated now, mean "
        f"steps {summary['mean_steps']:.2f}, mean NFE {summary['mean_nfe']:.2f})")
  if not config.sample.write_npz:
    return out_dir
  path = os.path.join(out_dir, "samples.npz")
  write_npz(out_dir, path, summary["total"])
  print(f"wrote {path}")
  return path

