r"""Generation at scale: `python -m grn_jax.main --mode=sample --config=... --workdir=DIR`.

Restores the GRN params (the converted params directory `config.sample.checkpoint`, or else the
latest training checkpoint in DIR, EMA `config.sample.params` by default) and the tokenizer
(grn_jax.tokenizer_io.load_tokenizer(config.tokenizer)), then writes `<out>/{index:06d}.png`
for every output index of the family (C2I: `config.sample.per_class` images of each class in
class order; ImageNet default 50 -> 50,000 images) and `<out>/samples.npz` (images uint8
[N, H, W, 3], the family's arrays (C2I: labels), steps, nfe int32 [N], entropy float32 [N]: H at
the warm-up step, see fit_entropy); <out> is `config.sample.output_dir` or DIR/samples.

The core here is family-free: a *family* (sampling/c2i.py `C2IGeneration`, one per config.task
in FAMILIES; sampling/t2iv_run.py `T2IVGeneration` for prompts) says how many outputs there are,
what index i is conditioned on, how a batch of rows is sampled (decoded to uint8 inside the
jitted program), what metadata each output carries, how outputs are written (its `writer`,
sampling/outputs.py: PNGs for C2I, images or videos with a JSON record for T2I/T2V) and which
settings the files depend on (`record`).

Output i is sampled with the key fold_in(key(config.sample.seed), i): it does not depend on the
batch size, the mesh or the batch it lands in, so a killed run regenerates exactly the missing
PNGs and reproduces what an uninterrupted run writes.

Resuming is safe: before the first PNG, `<out>/generation.json` records what the files depend
on (the family's `record`: model and sampler settings, schedule, counts; the seed; fingerprints
of the contents of the params and of the decoder's params). A rerun resumes only when the new record equals it, and otherwise
stops with GenerationMismatchError naming the differing fields (choose a new output directory,
or delete the old one to overwrite it); a folder of PNGs without a record is refused the same
way. Every existing output is validated before it counts (its writer reads it back: it
decodes, agrees with its record, has the shape of the others and the metadata of its index, see
invalid_outputs); a damaged one is deleted and generated again. SIGTERM/SIGINT
finish the current batch and raise grn_jax.preemption.Interrupted (exit status 75). PNGs are written atomically and
carry the family's metadata and the row's steps, NFE and H as text chunks (`grn_steps`,
`grn_nfe`, `grn_entropy`), from which samples.npz is assembled by streaming (never all images in
memory). Batches are sharded over the mesh (`config.mesh`); the family places the params.
"""

import functools
import hashlib
import json
import os
from typing import Any, Callable, Mapping, Protocol
import zipfile

from absl import logging
import jax
import ml_collections
import numpy as np

from grn_jax import checkpointing
from grn_jax import preemption
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.sampling import c2i
from grn_jax.sampling import outputs
from grn_jax.sampling import refine

# samples.npz arrays every family has: name -> (PNG text chunk, dtype).
SAMPLER_FIELDS = {"steps": ("grn_steps", np.int32), "nfe": ("grn_nfe", np.int32),
                  "entropy": ("grn_entropy", np.float32)}


class Family(Protocol):
  """What generation needs from a model family (sampling/c2i.py C2IGeneration)."""

  num_outputs: int                 # outputs 0 .. num_outputs - 1
  settings: Any                    # the traced sampler settings (with as_arrays())
  npz_fields: Mapping[str, str]    # extra int32 samples.npz arrays: name -> metadata key
  writer: outputs.OutputWriter     # how an output is written and found done

  def conditions(self, indices: np.ndarray) -> Any:
    """Host pytree with leading axis [B]: what outputs `indices` int [B] are conditioned on."""

  def rows_fn(self, decode_fn: Callable[[Any, Any], Any]) -> Callable[..., Any]:
    """Hashable fn(params, conditions, keys [B], settings, decode_params) -> SampleOutput."""

  def metadata(self, index: int) -> dict[str, Any]:
    """Metadata of output `index` (besides steps, NFE and H)."""

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


RECORD_FILE = outputs.RECORD_FILE


class GenerationMismatchError(ValueError):
  """An output directory holds files of other settings than the ones of this run."""


png_path = outputs.png_path


def params_fingerprint(params: Any) -> str:
  """sha256 over the tree paths, dtypes, shapes and bytes of every leaf (host copies)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    leaf = np.asarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype.str}:{leaf.shape};".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def _flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for k, v in record.items():
    if isinstance(v, Mapping):
      flat.update(_flat(v, f"{prefix}{k}."))
    else:
      flat[f"{prefix}{k}"] = v
  return flat


def check_record(out_dir: str, record: Mapping[str, Any]) -> None:
  """Writes `record` to out_dir/generation.json, or checks it against the one there.

  Raises:
    GenerationMismatchError: the directory holds outputs of other settings (the message names
      the fields), or PNGs without a record.
  """
  record = json.loads(json.dumps(record))  # tuples -> lists, as stored
  path = os.path.join(out_dir, RECORD_FILE)
  how = (f"choose another output directory (config.sample.output_dir or --workdir) for the "
         f"new settings, or delete {out_dir} to overwrite it")
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    if stored != record:
      old, new = _flat(stored), _flat(record)
      diff = [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
              for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
      raise GenerationMismatchError(
          f"{out_dir} holds samples of other settings; differing: {'; '.join(diff[:10])}. "
          f"Rerun with the same settings to resume, or {how}.")
    return
  existing = [n for n in os.listdir(out_dir) if n.endswith((".png", ".npz", ".mp4", ".gif"))]
  if existing:
    raise GenerationMismatchError(
        f"{out_dir} holds {len(existing)} sample files but no {RECORD_FILE}, so their settings "
        f"are unknown; {how}.")
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)


def invalid_outputs(out_dir: str, family: "Family") -> list[tuple[int, str]]:
  """(index, why) of every output that is not validly written, ascending; deletes nothing.

  An output is valid when its writer finds it done, reads it back (family.writer.read: the
  files decode and agree with their record), its pixels have the shape of the first valid
  output's and its metadata is that of its index (family.metadata, e.g. the class or the
  prompt, and the sampler's grn_steps).
  """
  invalid, shape = [], None
  for i in range(family.num_outputs):
    if not family.writer.done(out_dir, i):
      invalid.append((i, "missing"))
      continue
    try:
      pixels, meta = family.writer.read(out_dir, i)
    except outputs.OutputDamaged as e:
      invalid.append((i, str(e)))
      continue
    expected = dict(family.metadata(i), grn_steps=None)
    wrong = [k for k, v in expected.items()
             if k not in meta or (v is not None and meta[k] != _as_stored(v))]
    if shape is not None and pixels.shape != shape:
      invalid.append((i, f"shape {pixels.shape}, not {shape}"))
    elif wrong:
      invalid.append((i, f"metadata {wrong} missing or not that of index {i}"))
    else:
      shape = shape or pixels.shape
  return invalid


def _as_stored(value: Any) -> Any:
  """Numbers as PNG text chunks read back (float), anything else as it is."""
  return float(value) if isinstance(value, (int, float, np.number)) else value


def missing_indices(out_dir: str, family: "Family") -> np.ndarray:
  """Indices (int [M], ascending) without a valid output (invalid_outputs); the files of a
  damaged one are deleted (logged) and a kill's leftover *.tmp files removed."""
  for name in os.listdir(out_dir):
    if name.endswith(".tmp") or ".tmp." in name:  # a write a kill interrupted
      os.remove(os.path.join(out_dir, name))
  missing = []
  for i, why in invalid_outputs(out_dir, family):
    if why != "missing":
      logging.warning("output %d in %s is damaged (%s): deleting it and generating it again.",
                      i, out_dir, why)
      family.writer.remove(out_dir, i)
    missing.append(i)
  return np.asarray(missing, np.int64)


read_png = outputs.read_png


def global_array(host: np.ndarray, mesh) -> jax.Array:
  """A batch-sharded global array from the same full host array on every process."""
  return jax.make_array_from_callback(host.shape, sharding.batch_sharding(mesh, host.ndim),
                                      lambda idx: host[idx])


def to_host(x: jax.Array) -> np.ndarray:
  """A global array as one numpy array on every process."""
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
  """Writes every output not yet written (family.writer); returns a summary.

  Args:
    family: what the outputs are (see Family).
    params: the model params (numpy or jax).
    decode_fn: hashable decode_fn(decode_params, latent) -> images in [-1, 1]; converted to
      uint8 inside the sampler's program.
    decode_params: its params.
    out_dir: where the outputs go (family.writer).
    batch_size: rows per batch (config.sample.batch_size), divisible by the batch devices.
    seed: output i uses the key fold_in(key(seed), i) (config.sample.seed).
    mesh: the device mesh (sharding.make_mesh(config.mesh)).
    show_progress: tqdm progress bar (process 0).

  Returns:
    dict(total, start (first index generated by this call), generated, mean_steps and
    mean_nfe over the outputs generated by this call, record: family.record(), the seed and
    the params' and the decoder params' fingerprints, as in out_dir/generation.json).

  Raises:
    GenerationMismatchError: out_dir holds outputs of other settings (see the module docstring).
    grn_jax.preemption.Interrupted: SIGTERM/SIGINT stopped it after the current batch.
  """
  total = family.num_outputs
  data_devices = int(np.prod([mesh.shape[a] for a in refine.BATCH_AXES if a in mesh.shape]))
  if batch_size % data_devices:
    raise ValueError(f"config.sample.batch_size={batch_size} must be divisible by the "
                     f"{data_devices} batch devices of the mesh {dict(mesh.shape)}.")
  owns_files = jax.process_index() == 0
  record = dict(family.record(), seed=seed, params=params_fingerprint(params),  # RUN_KEYS
                decode_params=params_fingerprint(decode_params))
  todo = np.zeros(total, bool)
  if owns_files:
    os.makedirs(out_dir, exist_ok=True)
    check_record(out_dir, record)
    todo[missing_indices(out_dir, family)] = True
  if jax.process_count() > 1:  # process 0 owns the files: every process generates what it says
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    todo = np.asarray(multihost_utils.broadcast_one_to_all(todo))
  todo = np.flatnonzero(todo)
  start = int(todo[0]) if len(todo) else total
  summary = dict(total=total, start=start, generated=0, mean_steps=float("nan"),
                 mean_nfe=float("nan"), record=record)
  if start >= total:
    logging.info("all %d samples already exist in %s", total, out_dir)
    return summary
  run = batch_runner(family.rows_fn(tokenizer_io.Uint8Decode(decode_fn)))
  settings = family.settings.as_arrays()
  base_key = jax.random.key(seed)
  params = family.place_params(params, mesh)
  decode_params = jax.device_put(decode_params, sharding.replicated(mesh))
  starts = range(0, len(todo), batch_size)
  iterator = starts
  if show_progress and owns_files:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    iterator = tqdm(starts, total=len(starts), desc=f"sampling {len(todo)} outputs",
                    unit="batch")
  steps_sum, nfe_sum = 0, 0
  with jax.set_mesh(mesh), preemption.StopSignals() as stop:
    for first in iterator:
      if stop.received:
        raise preemption.Interrupted(
            f"generation in {out_dir} ({total - len(todo) + summary['generated']} of {total} "
            "outputs written)", stop.received)
      chunk = todo[first:first + batch_size]
      valid = np.arange(batch_size) < len(chunk)
      idx = np.concatenate([chunk, np.full(batch_size - len(chunk), chunk[-1])])
      conditions = family.conditions(idx)
      out = run(params, jax.tree.map(lambda x: global_array(x, mesh), conditions),
                global_array(idx.astype(np.int32), mesh), base_key, settings,
                decode_params)
      images, steps, nfe, entropy = (to_host(x) for x in out)
      if owns_files:
        for i in np.flatnonzero(valid):
          index = int(idx[i])
          family.writer.write(out_dir, index, images[i],
                              dict(family.metadata(index), grn_steps=int(steps[i]),
                                   grn_nfe=int(nfe[i]), grn_entropy=float(entropy[i])))
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
