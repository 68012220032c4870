r"""Pre-tokenizes an image data set into HBQ label shards (grn_jax/data/label_shards.py).

  python -m grn_jax.data.tokenize_dataset --config=configs/c2i.py:variant=B \
      --config.tokenizer.checkpoint=DIR --source=tfds --data_dir=~/tensorflow_datasets \
      --out=/data/in256_labels [--store_latents]
  python -m grn_jax.data.tokenize_dataset --config=configs/c2i.py:variant=B \
      --config.tokenizer.checkpoint=DIR --source=folder --data_dir=/data/imagenet/train \
      --out=/data/in256_labels

The tokenizer is grn_jax.tokenizer_io.load_tokenizer(config.tokenizer): a converted params
directory (`python -m grn_jax.convert --kind=tokenizer`), or random weights with
--config.tokenizer.random_init=True (tests only).

Images get the ADM center crop to config.data.image_size, are mapped to [-1, 1], encoded by the
frozen tokenizer (one jitted function on this process's devices, fixed batch size) and quantized
to 'ind' HBQ labels with config.model.hbq_rounds rounds.

The example range is cut into shards of --examples_per_shard; each process (jax.process_index of
jax.process_count) writes a contiguous block of shards. A finished shard is renamed into place
with its metadata written last, so the command can be killed and rerun with the same flags: it
skips complete shards and redoes the rest. Unreadable images are skipped, logged with their
path, counted in the final summary and listed in the shard metadata and dataset.json.
"""

import concurrent.futures
import dataclasses
import glob
import json
import math
import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import hbq
from grn_jax import tokenizer_io
from grn_jax.data import images as images_lib
from grn_jax.data import label_shards
from grn_jax.data import sources

PLAN_FILE = "plan.json"


# ------------------------------------------------------------------------------------------------
# Readers: index -> (image uint8 [H, W, 3] | None, class label, id, failure reason).


class FolderReader:
  """`root/<class>/<image>` (class index = sorted sub-folder names)."""

  def __init__(self, root: str):
    self.files, self.class_names = images_lib.list_image_folder(root)
    self.description = f"folder:{os.path.abspath(root)}"

  def __len__(self) -> int:
    return len(self.files)

  def load(self, index: int):
    path, label = self.files[index]
    try:
      return images_lib.load_image(path), label, path, ""
    except images_lib.ImageDecodeError as e:
      return None, label, path, str(e)


class TfdsReader:
  """A tfds random-access data source with {'image', 'label'} elements."""

  def __init__(self, data_source, name: str, split: str):
    self.source = data_source
    self.description = f"tfds:{name}/{split}"
    self.class_names: list[str] = []
    try:
      self.class_names = list(data_source.dataset_info.features["label"].names)
    except (AttributeError, KeyError, TypeError):
      pass

  def __len__(self) -> int:
    return len(self.source)

  def load(self, index: int):
    ident = f"{self.description}[{index}]"
    try:
      element = self.source[index]
      name = element.get("file_name", b"")
      if name:
        ident += f" ({name.decode() if isinstance(name, bytes) else name})"
      return images_lib.to_uint8_rgb(element["image"], ident), int(element["label"]), ident, ""
    except Exception as e:  # pylint: disable=broad-except  # tfds decode errors vary by backend.
      return None, -1, ident, f"cannot read {ident}: {type(e).__name__}: {e}"


def open_tfds(name: str, split: str, data_dir: str | None) -> TfdsReader:
  source = sources.tfds_source(name, split, data_dir, folder_option="--source=folder")
  return TfdsReader(source, name, split)


def define_reader_flags(source: str, split: str) -> None:
  """The flags of the commands that read an image data set (this one, tokenizer_metrics).

  Args:
    source: default of --source (tfds | folder).
    split: default of --split.
  """
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "configs/c2i.py:variant=B", lock_config=True)
  flags.DEFINE_enum("source", source, ["tfds", "folder"], "Input kind.")
  flags.DEFINE_string("data_dir", "", "tfds data_dir, or the root of the class sub-folders.")
  flags.DEFINE_string("tfds_name", "", "tfds name (default: config.data.name).")
  flags.DEFINE_string("split", split, "tfds split.")
  flags.DEFINE_integer("image_size", 0, "Crop size (default: config.data.image_size).")


def reader_from_flags(config: ml_collections.ConfigDict):
  """(FolderReader or TfdsReader, crop size) of the flags of `define_reader_flags`."""
  fl = flags.FLAGS
  image_size = fl.image_size or config.data.image_size
  if image_size % 16:
    raise ValueError(f"image_size {image_size} must be a multiple of 16 (tokenizer stride).")
  if fl.source == "folder":
    return FolderReader(fl.data_dir), image_size
  return open_tfds(fl.tfds_name or config.data.name, fl.split, fl.data_dir), image_size


# ------------------------------------------------------------------------------------------------
# Sharding plan.


def shard_ranges(num_examples: int, examples_per_shard: int) -> list[tuple[int, int]]:
  """[start, stop) example ranges of consecutive shards."""
  if examples_per_shard < 1:
    raise ValueError(f"examples_per_shard must be >= 1, got {examples_per_shard}.")
  if num_examples < 1:
    raise ValueError("the data set is empty.")
  return [(s, min(s + examples_per_shard, num_examples))
          for s in range(0, num_examples, examples_per_shard)]


def assign_shards(num_shards: int, process_index: int, process_count: int) -> range:
  """The contiguous block of shard indices that process `process_index` writes.

  Blocks differ in size by at most one and together cover range(num_shards) exactly once.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count}).")
  return range(num_shards * process_index // process_count,
               num_shards * (process_index + 1) // process_count)


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the output directory holds; a rerun must match it to resume."""
  source: str
  num_examples: int
  examples_per_shard: int
  num_shards: int
  image_size: int
  hbq_rounds: int
  latent_dim: int
  store_latents: bool
  tokenizer: str


def check_or_write_plan(out: str, plan) -> None:
  """Writes out/plan.json (`plan`: a dataclass of what the shards depend on), or checks that an
  existing one matches (clear error otherwise)."""
  path = os.path.join(out, PLAN_FILE)
  want = dataclasses.asdict(plan)
  if os.path.exists(path):
    with open(path) as f:
      have = json.load(f)
    diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
    if diff:
      raise ValueError(f"{out} already holds shards prepared with other settings "
                       f"{diff} (on disk, now). Use a new --out, or rerun with the same flags "
                       "to resume.")
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(want, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------
# Tokenizer.


def make_encoder(module, hbq_rounds: int, store_latents: bool, batch_size: int
                 ) -> Callable[[Any, np.ndarray], tuple[np.ndarray, np.ndarray | None]]:
  """encode(params, images uint8 [B, S, S, 3]) -> (labels uint8 [B,h,w,d], latent f16 | None).

  One jit over this process's local devices (batch split across them); B must equal batch_size.
  """
  devices = jax.local_devices()
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if batch_size % len(devices):
    raise ValueError(f"batch_size {batch_size} must be divisible by the {len(devices)} local "
                     "devices.")

  @jax.jit
  def encode(params, images):
    latent = tokenizer_io.encode_latents(module, params, images)
    labels = hbq.quantize(latent, hbq_rounds, "ind").astype(jnp.uint8)
    return labels, (latent.astype(jnp.float16) if store_latents else None)

  placed: dict[int, Any] = {}

  def run(params, images):
    if images.shape[0] != batch_size:
      raise ValueError(f"encoder batch must be {batch_size}, got {images.shape[0]}.")
    if id(params) not in placed:
      placed.clear()
      placed[id(params)] = jax.device_put(params, replicated)
    labels, latent = encode(placed[id(params)], jax.device_put(images, batch_sharding))
    return np.asarray(labels), (None if latent is None else np.asarray(latent))

  return run


# ------------------------------------------------------------------------------------------------
# Main loop.


def _remove_stale_temps(shard_path: str) -> None:
  for pattern in (shard_path + ".tmp-*", label_shards.metadata_path(shard_path) + ".tmp-*"):
    for tmp in glob.glob(pattern):
      os.remove(tmp)


def _check_existing_shard(path: str, plan: Plan, start: int, stop: int) -> None:
  meta = label_shards.read_metadata(path)
  if (meta.hbq_rounds != plan.hbq_rounds or meta.has_latents != plan.store_latents or
      meta.extra.get("start") != start or meta.extra.get("stop") != stop):
    raise ValueError(f"existing shard {path} does not belong to this run ({meta}); use a new "
                     "--out.")


def tokenize_to_shards(reader, out: str, encoder, params, *, image_size: int, hbq_rounds: int,
                       latent_dim: int, store_latents: bool, examples_per_shard: int,
                       batch_size: int, tokenizer_desc: str, process_index: int = 0,
                       process_count: int = 1, max_examples: int = -1, num_threads: int = 8,
                       ) -> dict[str, Any]:
  """Writes this process's shards; returns a summary dict (written, skipped, shards done).

  Args:
    reader: FolderReader / TfdsReader (len() and load(index)).
    out: output directory.
    encoder: from `make_encoder` (batch_size images per call).
    params: tokenizer params.
    max_examples: > 0 uses only the first max_examples examples.
  """
  if not 1 <= hbq_rounds <= 8:
    raise ValueError(f"hbq_rounds={hbq_rounds}: label shards store uint8 'ind' labels, so "
                     "config.model.hbq_rounds must be in [1, 8].")
  if image_size % 16:
    raise ValueError(f"image_size {image_size} must be a multiple of 16 (tokenizer stride).")
  num_examples = len(reader) if max_examples <= 0 else min(max_examples, len(reader))
  ranges = shard_ranges(num_examples, examples_per_shard)
  plan = Plan(source=reader.description, num_examples=num_examples,
              examples_per_shard=examples_per_shard, num_shards=len(ranges),
              image_size=image_size, hbq_rounds=hbq_rounds, latent_dim=latent_dim,
              store_latents=store_latents, tokenizer=tokenizer_desc)
  os.makedirs(out, exist_ok=True)
  check_or_write_plan(out, plan)
  mine = assign_shards(len(ranges), process_index, process_count)
  logging.info("process %d/%d writes shards %s of %d (%d examples in all) to %s",
               process_index, process_count, mine, len(ranges), num_examples, out)
  summary = dict(written=0, skipped=[], shards_written=[], shards_already_done=[])

  def load_cropped(index):
    image, label, ident, reason = reader.load(index)
    if image is None:
      return None, label, ident, reason
    try:
      return images_lib.center_crop_adm(image, image_size), label, ident, ""
    except (ValueError, OSError) as e:
      return None, label, ident, f"cannot crop {ident}: {type(e).__name__}: {e}"

  with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
    for shard in mine:
      start, stop = ranges[shard]
      path = os.path.join(out, label_shards.shard_filename(shard, len(ranges)))
      if label_shards.is_complete_shard(path):
        _check_existing_shard(path, plan, start, stop)
        summary["shards_already_done"].append(shard)
        logging.info("shard %d already complete, skipped: %s", shard, path)
        continue
      _remove_stale_temps(path)
      labels, latents, classes, skipped = [], [], [], []
      for batch_start in range(start, stop, batch_size):
        indices = range(batch_start, min(batch_start + batch_size, stop))
        batch = []
        for image, label, ident, reason in pool.map(load_cropped, indices):
          if image is None:
            logging.warning("skipping unreadable image %s", reason)
            skipped.append((ident, reason))
          else:
            batch.append((image, label))
        if not batch:
          continue
        images = np.stack([b[0] for b in batch])
        pad = batch_size - len(batch)  # static shape: the last batch is padded, then cut.
        if pad:
          images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.uint8)])
        batch_labels, batch_latents = encoder(params, images)
        labels.append(batch_labels[:len(batch)])
        classes.extend(b[1] for b in batch)
        if store_latents:
          latents.append(batch_latents[:len(batch)])
      h = w = image_size // 16
      all_labels = (np.concatenate(labels) if labels
                    else np.zeros((0, h, w, latent_dim), np.uint8))
      all_latents = None
      if store_latents:
        all_latents = (np.concatenate(latents) if latents
                       else np.zeros((0, h, w, latent_dim), np.float16))
      label_shards.write_records(
          path, all_labels, np.asarray(classes, np.int32).reshape(-1), all_latents,
          hbq_rounds=hbq_rounds, source=reader.description, skipped=skipped,
          extra=dict(start=start, stop=stop, image_size=image_size, tokenizer=tokenizer_desc))
      summary["written"] += len(all_labels)
      summary["skipped"].extend(skipped)
      summary["shards_written"].append(shard)
      logging.info("wrote shard %d (%d examples, %d skipped): %s", shard, len(all_labels),
                   len(skipped), path)
  return summary


def write_dataset_summary(out: str, class_names: Sequence[str] = ()) -> dict[str, Any]:
  """After all processes finished: checks every planned shard and writes out/dataset.json."""
  with open(os.path.join(out, PLAN_FILE)) as f:
    plan = json.load(f)
  total, skipped, incomplete = 0, [], []
  for shard in range(plan["num_shards"]):
    path = os.path.join(out, label_shards.shard_filename(shard, plan["num_shards"]))
    if not label_shards.is_complete_shard(path):
      incomplete.append(path)
      continue
    meta = label_shards.read_metadata(path)
    total += meta.num_examples
    skipped.extend(meta.skipped)
  if incomplete:
    raise RuntimeError(f"{len(incomplete)} shards are not complete (e.g. {incomplete[:3]}); "
                       "rerun the command to finish them.")
  summary = dict(plan=plan, num_examples_written=total, num_skipped=len(skipped),
                 skipped=[list(s) for s in skipped], class_names=list(class_names))
  tmp = os.path.join(out, f"{label_shards.DATASET_METADATA}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(summary, f, indent=1)
  os.replace(tmp, os.path.join(out, label_shards.DATASET_METADATA))
  return summary


FLAGS = flags.FLAGS


def define_flags() -> None:
  define_reader_flags(source="tfds", split="train")
  flags.DEFINE_string("out", None, "Output directory of the shards.")
  flags.DEFINE_bool("store_latents", False, "Also store the float16 tokenizer latent.")
  flags.DEFINE_integer("examples_per_shard", 2048, "Examples per shard.")
  flags.DEFINE_integer("batch_size", 64, "Encoder batch per process (rounded up to a multiple "
                       "of the local device count).")
  flags.DEFINE_integer("max_examples", -1, "> 0: only the first N examples.")
  flags.DEFINE_integer("num_threads", 16, "Image decoding threads.")
  flags.mark_flags_as_required(["out"])


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  config = FLAGS.config
  tokenizer_io.check_latent_dim(config)
  reader, image_size = reader_from_flags(config)
  module, params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  ndev = jax.local_device_count()
  batch_size = math.ceil(FLAGS.batch_size / ndev) * ndev
  encoder = make_encoder(module, config.model.hbq_rounds, FLAGS.store_latents, batch_size)
  desc = (f"random_init(seed={config.seed})" if config.tokenizer.random_init
          else os.path.abspath(config.tokenizer.checkpoint))
  summary = tokenize_to_shards(
      reader, FLAGS.out, encoder, params, image_size=image_size,
      hbq_rounds=config.model.hbq_rounds, latent_dim=config.tokenizer.latent_dim,
      store_latents=FLAGS.store_latents, examples_per_shard=FLAGS.examples_per_shard,
      batch_size=batch_size, tokenizer_desc=desc, process_index=jax.process_index(),
      process_count=jax.process_count(), max_examples=FLAGS.max_examples,
      num_threads=FLAGS.num_threads)
  logging.info("process %d: wrote %d examples in shards %s (already complete: %s); skipped %d "
               "unreadable images%s", jax.process_index(), summary["written"],
               summary["shards_written"], summary["shards_already_done"],
               len(summary["skipped"]),
               "".join(f"\n  {ident}: {reason}" for ident, reason in summary["skipped"]))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices("grn_jax_tokenize_dataset_done")
  if jax.process_index() == 0:
    total = write_dataset_summary(FLAGS.out, reader.class_names)
    print(f"done: {total['num_examples_written']} examples in {total['plan']['num_shards']} "
          f"shards under {FLAGS.out}; {total['num_skipped']} unreadable images skipped"
          + "".join(f"\n  {p}: {r}" for p, r in total["skipped"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
