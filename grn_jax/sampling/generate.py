r"""Generation at scale: `python -m grn_jax.main --mode=sample --config=... --workdir=DIR`.

Restores the GRN params (the converted params directory `config.sample.checkpoint`, or else the
latest training checkpoint in DIR, EMA `config.sample.params` by default) and the tokenizer
(grn_jax.tokenizer_io.load_tokenizer(config.tokenizer)), then writes `<out>/{index:06d}.png`
for every output index of the family (C2I: `config.sample.per_class` images of each class in
class order; ImageNet default 50 -> 50,000 images) and `<out>/samples.npz` (images uint8
[N, H, W, 3], the family's arrays (C2I: labels), steps, nfe int32 [N], entropy float32 [N]: H at
the warm-up step, see fit_entropy); <out> is `config.sample.output_dir` or DIR/samples.

The core here is family-free: a *family* (sampling/c2i.py `C2IGeneration`, one per config.task
in FAMILIES) says how many outputs there are, what index i is conditioned on, how a batch of
rows is sampled (decoded to uint8 inside the jitted program), what metadata each file carries
and which settings the files depend on (`record`).

Output i is sampled with the key fold_in(key(config.sample.seed), i): it does not depend on the
batch size, the mesh or the batch it lands in, so a killed run resumes from the first missing
PNG and reproduces exactly what an uninterrupted run writes. PNGs are written atomically and
carry the family's metadata and the row's steps, NFE and H as text chunks (`grn_steps`,
`grn_nfe`, `grn_entropy`), from which samples.npz is assembled by streaming (never all images in
memory). Batches are sharded over the mesh (`config.mesh`); the family places the params.
"""

import functools
import os
from typing import Any, Callable, Mapping, Protocol
import zipfile

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
from PIL import PngImagePlugin

from grn_jax import checkpointing
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.sampling import c2i
from grn_jax.sampling import refine
from grn_jax.sampling.spec import SamplerSettings

# samples.npz arrays every family has: name -> (PNG text chunk, dtype).
SAMPLER_FIELDS = {"steps": ("grn_steps", np.int32), "nfe": ("grn_nfe", np.int32),
                  "entropy": ("grn_entropy", np.float32)}


class Family(Protocol):
  """What generation needs from a model family (sampling/c2i.py C2IGeneration)."""

  num_outputs: int                 # outputs 0 .. num_outputs - 1
  settings: SamplerSettings        # the traced sampler settings
  npz_fields: Mapping[str, str]    # extra int32 samples.npz arrays: name -> metadata key

  def conditions(self, indices: np.ndarray) -> Any:
    """Host pytree with leading axis [B]: what outputs `indices` int [B] are conditioned on."""

  def rows_fn(self, decode_fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """Hashable fn(params, conditions, keys [B], settings, decode_params) -> SampleOutput."""

  def metadata(self, index: int) -> dict[str, float]:
    """PNG text chunks of output `index` (besides steps, NFE and H)."""

  def place_params(self, params: Any, mesh) -> Any:
    """Params on the mesh (checked against the model)."""

  def abstract_params(self, mesh) -> Any:
    """The params as jax.ShapeDtypeStructs with the shardings place_params gives them (AOT)."""

  def record(self) -> dict[str, Any]:
    """The settings the outputs depend on (besides the params and the seed)."""


FAMILIES: dict[str, Callable[[ml_collections.ConfigDict], Family]] = {
    "c2i": c2i.C2IGeneration}


def family_of(config: ml_collections.ConfigDict) -> Family:
  """The generation family of config.task (errors list the known tasks)."""
  if config.task not in FAMILIES:
    raise ValueError(f"config.task={config.task!r} has no generation family; known: "
                     f"{sorted(FAMILIES)}.")
  return FAMILIES[config.task](config)


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


def png_path(out_dir: str, index: int) -> str:
  return os.path.join(out_dir, f"{index:06d}.png")


def first_missing_index(out_dir: str, total: int) -> int:
  """The first index without a PNG (resumption point); total when all exist."""
  for i in range(total):
    if not os.path.exists(png_path(out_dir, i)):
      return i
  return total


def save_png(path: str, image: np.ndarray, meta: Mapping[str, float]) -> None:
  """Writes uint8 [H, W, C] with text chunks `meta`, atomically (a tmp file, then a rename)."""
  info = PngImagePlugin.PngInfo()
  for k, v in meta.items():
    info.add_text(k, repr(v))
  tmp = path + ".tmp"
  Image.fromarray(image).save(tmp, format="PNG", pnginfo=info)
  os.replace(tmp, path)  # atomic: a killed run never leaves a truncated PNG behind


def read_png(path: str) -> tuple[np.ndarray, dict[str, float]]:
  """(uint8 [H, W, 3], metadata dict of the grn_* text chunks)."""
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
def batch_runner(rows_fn):
  """THE program of one batch: jit(params, conditions, indices int32 [B], base_key, settings,
  decode_params) -> (images, steps, row_nfe, entropy); `generate` calls it on every batch,
  `python -m grn_jax.aot --program=sample` compiles it on `abstract_inputs`."""

  @jax.jit
  def run(params, conditions, indices, base_key, settings, decode_params):
    keys = jax.vmap(lambda i: jax.random.fold_in(base_key, i))(indices)
    out = rows_fn(params, conditions, keys, settings, decode_params)
    return out.images, out.steps, out.row_nfe, out.entropy

  return run


def abstract_inputs(family: Family, abstract_decode_params: Any, mesh, batch_size: int
                    ) -> tuple[Any, ...]:
  """batch_runner's arguments for a batch of `batch_size` rows as jax.ShapeDtypeStructs on the
  shardings `generate` puts them on (params: the family's; conditions and indices over the
  batch axes; key, settings and decode params replicated). Creates no array."""
  replicated = sharding.replicated(mesh)
  on = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  batch = lambda x: on(x, sharding.batch_sharding(mesh, np.ndim(x)))
  conditions = jax.tree.map(batch, family.conditions(np.zeros(batch_size, np.int64)))
  indices = batch(np.zeros(batch_size, np.int32))
  base_key = on(jax.eval_shape(jax.random.key, 0), replicated)
  settings = jax.tree.map(lambda x: on(x, replicated),
                          jax.eval_shape(family.settings.as_arrays))
  decode_params = jax.tree.map(lambda x: on(x, replicated), abstract_decode_params)
  return (family.abstract_params(mesh), conditions, indices, base_key, settings, decode_params)


def generate(family: Family, params: Any, decode_fn, decode_params, out_dir: str, *,
             batch_size: int, seed: int, mesh=None, show_progress: bool = True
             ) -> dict[str, Any]:
  """Writes the PNG of every index not yet written; returns a summary.

  Args:
    family: what the outputs are (see Family).
    params: the model params (numpy or jax).
    decode_fn: hashable decode_fn(decode_params, latent) -> images in [-1, 1]; converted to
      uint8 inside the sampler's program.
    decode_params: its params.
    out_dir: where the PNGs go.
    batch_size: rows per batch (config.sample.batch_size), divisible by the batch devices.
    seed: output i uses the key fold_in(key(seed), i) (config.sample.seed).
    mesh: the device mesh (sharding.make_mesh(config.mesh)).
    show_progress: tqdm progress bar (process 0).

  Returns:
    dict(total, start (first index generated by this call), generated, mean_steps and
    mean_nfe over the outputs generated by this call, record: family.record() and the seed).
  """
  total = family.num_outputs
  data_devices = int(np.prod([mesh.shape[a] for a in refine.BATCH_AXES if a in mesh.shape]))
  if batch_size % data_devices:
    raise ValueError(f"config.sample.batch_size={batch_size} must be divisible by the "
                     f"{data_devices} batch devices of the mesh {dict(mesh.shape)}.")
  writer = jax.process_index() == 0
  if writer:
    os.makedirs(out_dir, exist_ok=True)
  start = first_missing_index(out_dir, total) if writer else 0
  if jax.process_count() > 1:  # process 0 owns the files: every process resumes where it says
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    start = int(multihost_utils.broadcast_one_to_all(np.int32(start)))
  summary = dict(total=total, start=start, generated=0, mean_steps=float("nan"),
                 mean_nfe=float("nan"), record=dict(family.record(), seed=seed))
  if start >= total:
    logging.info("all %d samples already exist in %s", total, out_dir)
    return summary
  run = batch_runner(family.rows_fn(tokenizer_io.Uint8Decode(decode_fn)))
  settings = family.settings.as_arrays()
  base_key = jax.random.key(seed)
  params = family.place_params(params, mesh)
  decode_params = jax.device_put(decode_params, sharding.replicated(mesh))
  starts = range(start, total, batch_size)
  iterator = starts
  if show_progress and writer:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    iterator = tqdm(starts, total=len(starts), desc=f"sampling {total - start} outputs",
                    unit="batch")
  steps_sum, nfe_sum = 0, 0
  with jax.set_mesh(mesh):
    for first in iterator:
      idx = np.arange(first, first + batch_size)
      valid = idx < total
      conditions = family.conditions(np.minimum(idx, total - 1))
      outputs = run(params, jax.tree.map(lambda x: _global_array(x, mesh), conditions),
                    _global_array(idx.astype(np.int32), mesh), base_key, settings,
                    decode_params)
      images, steps, nfe, entropy = (_to_host(x) for x in outputs)
      if writer:
        for i in np.flatnonzero(valid):
          index = int(idx[i])
          save_png(png_path(out_dir, index), images[i],
                   dict(family.metadata(index), grn_steps=int(steps[i]), grn_nfe=int(nfe[i]),
                        grn_entropy=float(entropy[i])))
      steps_sum += int(steps[valid].sum())
      nfe_sum += int(nfe[valid].sum())
      summary["generated"] += int(valid.sum())
  summary["mean_steps"] = steps_sum / summary["generated"]
  summary["mean_nfe"] = nfe_sum / summary["generated"]
  return summary


def write_npz(out_dir: str, path: str, total: int, family_fields: Mapping[str, str]) -> None:
  """Streams PNGs 0..total-1 into an (uncompressed) npz: images, the family's int32 arrays
  (name -> metadata key), steps, nfe, entropy."""
  first, _ = read_png(png_path(out_dir, 0))
  header = dict(descr=np.lib.format.dtype_to_descr(np.dtype(np.uint8)), fortran_order=False,
                shape=(total,) + first.shape)
  fields = dict({name: (key, np.int32) for name, key in family_fields.items()}, **SAMPLER_FIELDS)
  arrays = {name: np.zeros(total, dtype) for name, (_, dtype) in fields.items()}
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
        for name, (key, _) in fields.items():
          arrays[name][i] = meta.get(key, -1)
    for name, arr in arrays.items():
      with zf.open(f"{name}.npy", "w") as f:
        np.lib.format.write_array(f, arr)
  os.replace(tmp, path)


def generate_to_workdir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The `--mode=sample` entry point; returns the path of samples.npz (or the PNG folder)."""
  out_dir = config.sample.output_dir or os.path.join(workdir, "samples")
  family = family_of(config)
  params = load_sampling_params(config, workdir)
  tok_module, tok_params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  summary = generate(family, params, tokenizer_io.TokenizerDecode(tok_module), tok_params,
                     out_dir, batch_size=int(config.sample.batch_size),
                     seed=int(config.sample.seed), mesh=sharding.make_mesh(config.mesh))
  logging.info("sampling summary: %s", summary)
  if jax.process_index() != 0:
    return out_dir
  print(f"{summary['total']} samples in {out_dir} ({summary['generated']} generated now, mean "
        f"steps {summary['mean_steps']:.2f}, mean NFE {summary['mean_nfe']:.2f})")
  if not config.sample.write_npz:
    return out_dir
  path = os.path.join(out_dir, "samples.npz")
  write_npz(out_dir, path, summary["total"], family.npz_fields)
  print(f"wrote {path}")
  return path
