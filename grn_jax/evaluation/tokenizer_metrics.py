r"""Tokenizer reconstruction table: PSNR / SSIM (/ rFID) at full precision and HBQ M = 1..8.

  python -m grn_jax.evaluation.tokenizer_metrics --config=configs/c2i.py:variant=B \
      --config.tokenizer.checkpoint=DIR --source=folder --data_dir=/data/imagenet/val \
      --num_images=5000

Images get the ADM center crop to config.data.image_size. The tokenizer is
grn_jax.tokenizer_io.load_tokenizer(config.tokenizer). rFID joins the table when the FID
Inception weights are available (--inception, config.eval.inception, $GRN_JAX_INCEPTION or
~/.cache/grn_jax/), preprocessed by config.eval.protocol (grn_jax/evaluation/fid_protocol.py;
auto: torch_fidelity, the official protocol).
"""

import json
from typing import Iterator

from absl import app
from absl import flags
from absl import logging
import jax
import numpy as np

from grn_jax import config_check
from grn_jax import tokenizer_io
from grn_jax.data import images as images_lib
from grn_jax.data import tokenize_dataset
from grn_jax.evaluation import EVAL_FIELDS
from grn_jax.evaluation import fid_protocol
from grn_jax.evaluation import inception
from grn_jax.evaluation import recon

FLAGS = flags.FLAGS


def define_flags() -> None:
  tokenize_dataset.define_reader_flags(source="folder", split="validation")
  flags.DEFINE_integer("num_images", -1, "Images to evaluate (the first N readable ones); "
                       "default config.eval.recon_num_images.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")
  flags.DEFINE_list("rounds", ["full", "1", "2", "3", "4", "5", "6", "7", "8"],
                    "Table rows: 'full' (float latent) and HBQ rounds M.")
  flags.DEFINE_string("inception", "", "FID Inception weights for rFID (.npz or .pth); default "
                      "config.eval.inception, $GRN_JAX_INCEPTION or ~/.cache/grn_jax/.")
  flags.DEFINE_bool("rfid", True, "Add rFID when the Inception weights are available.")
  flags.DEFINE_string("out_json", "", "Also write the table as JSON here.")


def iter_images(reader, num_images: int, image_size: int) -> Iterator[np.ndarray]:
  """The first `num_images` readable images, ADM-center-cropped; unreadable ones are logged."""
  count = skipped = 0
  for index in range(len(reader)):
    if count >= num_images:
      break
    image, _, ident, reason = reader.load(index)
    if image is None:
      skipped += 1
      logging.warning("skipping unreadable image %s", reason)
      continue
    count += 1
    yield images_lib.center_crop_adm(image, image_size)
  if skipped:
    print(f"skipped {skipped} unreadable images (see the log)")


def parse_rounds(values) -> list[int | None]:
  out = []
  for v in values:
    if v == "full":
      out.append(None)
    elif v.isdigit() and 1 <= int(v) <= 16:
      out.append(int(v))
    else:
      raise ValueError(f"--rounds entries must be 'full' or an integer in [1, 16], got {v!r}.")
  return out


def main(argv) -> None:
  del argv
  config = FLAGS.config
  config_check.check_fields(config.eval, "eval", EVAL_FIELDS)
  num_images = FLAGS.num_images if FLAGS.num_images > 0 else config.eval.recon_num_images
  inception_path = FLAGS.inception or config.eval.inception or None
  reader, image_size = tokenize_dataset.reader_from_flags(config)
  module, params = tokenizer_io.load_tokenizer(config.tokenizer, seed=config.seed)
  params = jax.device_put(params)
  feature_fn = None
  if FLAGS.rfid:
    if inception.weights_available(inception_path):
      protocol = fid_protocol.resolve_protocol(config.eval.protocol)
      feature_fn = inception.make_feature_fn(inception.load_params(inception_path),
                                             FLAGS.batch_size, protocol=protocol)
    else:
      print("rFID skipped: no FID Inception weights at "
            f"{inception_path or inception.default_weights_path()} (see "
            "grn_jax/evaluation/inception.py for the download command).")
  evaluator = recon.ReconEvaluator(module, params, parse_rounds(FLAGS.rounds), feature_fn)
  total = 0
  for batch, valid in recon.padded_batches(
      iter_images(reader, num_images, image_size), FLAGS.batch_size):
    evaluator.add(batch, valid)
    total += valid
    logging.log_every_n(logging.INFO, "evaluated %d images", 10, total)
  results = evaluator.results()
  print(recon.format_table(results, total))
  if FLAGS.out_json:
    with open(FLAGS.out_json, "w") as f:
      json.dump(dict(num_images=total, rows=results), f, indent=1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
