r"""One-time preparation of captioned images / videos for T2I/T2V training: media -> HBQ bit
labels (the frozen tokenizer of config.tokenizer, e.g. the d=64 joint tokenizer) and captions ->
umT5 features (config.text_encoder; umT5-XXL is never run during training), into the shards of
grn_jax/data/captioned_shards.py.

  python -m grn_jax.data.tokenize_captioned --config=configs/t2iv.py:task=t2v \
      --config.tokenizer.checkpoint=TOKENIZER_PARAMS \
      --config.text_encoder.checkpoint=UMT5/params --config.text_encoder.tokenizer_path=UMT5/tokenizer \
      --media_dir=/data/clips --captions=/data/clips/captions.jsonl --out=/data/clips_prepared

Media get the bucket of grn_jax/data/captioned_media.py (aspect template at config.data.pixels,
duration buckets for videos). With --short_captions (the default) every item whose caption has a
short variant (the caption file's `short_caption`, a tfds --short_caption_key, or the caption cut
after a seeded number of sentences: captioned_media.py) stores that variant's umT5 features too,
for training's config.corruption.short_caption_prob. The items are cut into shards of
--examples_per_shard; process i of n (jax.process_index / process_count) writes a contiguous
block of them. A complete shard (its metadata is written last) is kept on a rerun with the same
flags, so the command is resumable. Unreadable media, empty captions and clips too short for the
buckets are skipped, logged and counted (in the shard metadata and the summary); more than
--max_skipped skips in one process stop the run (the media are probably not what the caption
file names).
"""

import dataclasses
import os
from typing import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from grn_jax import tokenizer_io
from grn_jax.data import captioned_media
from grn_jax.data import captioned_shards
from grn_jax.data import label_shards
from grn_jax.data import sources
from grn_jax.data import tokenize_dataset

PLAN_FILE = tokenize_dataset.PLAN_FILE
# media uint8 [T, H, W, 3] -> bits uint8 [T', h, w, D]; prompts -> per prompt float [l, text_dim]
MediaEncoder = Callable[[np.ndarray], np.ndarray]
PromptFeatures = Callable[[Sequence[str]], list[np.ndarray]]


class TooManySkipped(RuntimeError):
  """More items were skipped than --max_skipped allows."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """What the output directory holds; a rerun must match it to resume."""
  captions: str
  num_items: int
  examples_per_shard: int
  pixels: str
  max_duration: float
  tokenizer: str
  text_encoder: str
  short_captions: bool = True


def make_media_encoder(module, params, hbq_rounds: int) -> MediaEncoder:
  """The frozen tokenizer as a MediaEncoder (one compile per bucket shape)."""
  encode = tokenizer_io.make_encode_fn(module, hbq_rounds, "bit")

  def run(frames):
    x = frames[None] if len(frames) > 1 else frames      # video [1, T, H, W, 3] | image [1, H, W, 3]
    labels = np.asarray(encode(params, x))[0]
    return (labels[None] if len(frames) == 1 else labels).astype(np.uint8)

  return run


def make_prompt_features(encoder) -> PromptFeatures:
  """A grn_jax.text.encoder.PromptEncoder as PromptFeatures (valid tokens only, EOS included)."""

  def run(prompts):
    features, mask = encoder(list(prompts))
    features = np.asarray(features, np.float32)
    return [f[m] for f, m in zip(features, np.asarray(mask))]

  return run


def prepare(reader, out: str, *, data,
            encode_media: MediaEncoder, prompt_features: PromptFeatures, plan: Plan,
            process_index: int = 0, process_count: int = 1, max_skipped: int = 100
            ) -> dict:
  """Writes this process's shards (see the module docstring); returns its summary
  {'written', 'short_captions' (of those written), 'shards_written', 'shards_already_done',
  'skipped': [(media, reason)]}.

  Args:
    reader: captioned_media.CaptionFileReader or TfdsCaptionReader (`len`, `read(i)`,
      `ident(i)`).
  """
  os.makedirs(out, exist_ok=True)
  tokenize_dataset.check_or_write_plan(out, plan)
  captioned_shards.write_null_prompt(out, prompt_features([""])[0])
  if plan.num_items != len(reader):
    raise ValueError(f"the plan names {plan.num_items} items, the reader has {len(reader)}.")
  ranges = tokenize_dataset.shard_ranges(len(reader), plan.examples_per_shard)
  summary = dict(written=0, short_captions=0, shards_written=[], shards_already_done=[],
                 skipped=[])
  for shard in tokenize_dataset.assign_shards(len(ranges), process_index, process_count):
    path = os.path.join(out, label_shards.shard_filename(shard, len(ranges),
                                                         captioned_shards.PREFIX))
    if captioned_shards.is_complete_shard(path):
      summary["shards_already_done"].append(shard)
      continue
    examples, skipped = [], []
    for index in range(*ranges[shard]):
      ident = reader.ident(index)
      try:
        frames, fps, caption, short, ident = reader.read(index)
        if not caption.strip():
          raise captioned_media.SkipItem("empty caption")
        frames, h_div_w = captioned_media.bucket_media(frames, fps, data)
        short = captioned_media.short_variant(caption, short, index) if plan.short_captions else ""
        examples.append(dict(labels=encode_media(frames), h_div_w=h_div_w, caption=caption,
                             short_caption=short))
      except captioned_media.SkipItem as e:
        logging.warning("skipping %s: %s", ident, e)
        skipped.append((ident, str(e)))
        summary["skipped"].append((ident, str(e)))
        if len(summary["skipped"]) > max_skipped:
          raise TooManySkipped(
              f"{len(summary['skipped'])} items skipped (more than --max_skipped={max_skipped}), "
              f"e.g. {summary['skipped'][:3]}: check --media_dir against the caption file.") from e
    # One encoder call per shard for the captions and the short captions together.
    with_short = [e for e in examples if e["short_caption"]]
    slots = [(e, "features") for e in examples] + [(e, "short_features") for e in with_short]
    texts = [e["caption"] for e in examples] + [e["short_caption"] for e in with_short]
    for (example, key), features in zip(slots, prompt_features(texts) if texts else []):
      example[key] = features
    if examples:
      label_dim, text_dim = examples[0]["labels"].shape[-1], examples[0]["features"].shape[-1]
    else:
      label_dim = text_dim = 0
    captioned_shards.write_shard(path, examples, text_dim=text_dim, label_dim=label_dim,
                                 source=plan.captions, skipped=skipped)
    summary["written"] += len(examples)
    summary["short_captions"] += len(with_short)
    summary["shards_written"].append(shard)
  return summary


FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", None, "A configs/t2iv.py config.", lock_config=True)
  flags.DEFINE_string("media_dir", "", "Folder the caption file's media paths are relative to.")
  flags.DEFINE_string("captions", "", "The .jsonl or .csv caption file (or --tfds_name).")
  flags.DEFINE_string("tfds_name", "", "A catalogued tfds data set instead of a caption file.")
  flags.DEFINE_string("split", "train", "tfds split.")
  flags.DEFINE_string("tfds_data_dir", "", "tfds data_dir.")
  flags.DEFINE_string("media_key", "image", "tfds feature of the image / video.")
  flags.DEFINE_string("caption_key", "caption", "tfds feature of the caption ('a/b' nests).")
  flags.DEFINE_string("short_caption_key", "", "tfds feature of a short caption (optional).")
  flags.DEFINE_bool("short_captions", True, "Store each item's short caption's features too "
                    "(the caption file's short_caption, else its first sentences): "
                    "config.corruption.short_caption_prob trains on them.")
  flags.DEFINE_string("out", None, "Output directory of the shards.")
  flags.DEFINE_integer("examples_per_shard", 1024, "Examples per shard.")
  flags.DEFINE_integer("max_skipped", 1000, "Stop when one process skips more items.")
  flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (TPU pods): each "
                    "process writes its block of shards.")
  flags.mark_flags_as_required(["config", "out"])


def main(argv: Sequence[str]) -> None:
  # pylint: disable=g-import-not-at-top
  from grn_jax.text import encoder as text_encoder
  # pylint: enable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}.")
  if FLAGS.distributed:
    jax.distributed.initialize()
  config = FLAGS.config
  if bool(FLAGS.captions) == bool(FLAGS.tfds_name):
    raise app.UsageError("give either --captions (with --media_dir) or --tfds_name.")
  if FLAGS.captions:
    reader = captioned_media.CaptionFileReader(FLAGS.captions, FLAGS.media_dir)
  else:
    source = sources.tfds_source(FLAGS.tfds_name, FLAGS.split, FLAGS.tfds_data_dir,
                                 folder_option="--captions and --media_dir")
    reader = captioned_media.TfdsCaptionReader(source, FLAGS.tfds_name, FLAGS.split,
                                               FLAGS.media_key, FLAGS.caption_key,
                                               FLAGS.short_caption_key)
  module, params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  prompts = text_encoder.PromptEncoder.from_config(config.text_encoder)
  plan = Plan(captions=reader.description, num_items=len(reader),
              examples_per_shard=FLAGS.examples_per_shard, pixels=config.data.pixels,
              max_duration=float(config.data.max_duration),
              tokenizer=os.path.abspath(config.tokenizer.checkpoint),
              text_encoder=os.path.abspath(config.text_encoder.checkpoint),
              short_captions=FLAGS.short_captions)
  summary = prepare(reader, FLAGS.out, data=config.data,
                    encode_media=make_media_encoder(module, params, config.model.hbq_rounds),
                    prompt_features=make_prompt_features(prompts), plan=plan,
                    process_index=jax.process_index(), process_count=jax.process_count(),
                    max_skipped=FLAGS.max_skipped)
  print(f"process {jax.process_index()}: {summary['written']} examples "
        f"({summary['short_captions']} with a short caption) in shards "
        f"{summary['shards_written']} (already complete: {summary['shards_already_done']}); "
        f"{len(summary['skipped'])} skipped"
        + "".join(f"\n  {m}: {r}" for m, r in summary["skipped"]))


if __name__ == "__main__":
  define_flags()
  app.run(main)
