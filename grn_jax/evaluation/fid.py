r"""FID / Inception Score / precision / recall of generated images against reference statistics.

  python -m grn_jax.evaluation.fid --samples=workdir/samples/samples.npz \
      --ref=jit_in256_stats.npz [--inception=PATH] [--precision_recall] [--protocol=auto]

--samples: an npz with uint8 `images` [N, H, W, 3] (grn_jax sampling) or `arr_0` (ADM), read in
streamed batches, or a folder of PNG/JPEG files. --ref: npz with mu/sigma (see reference.py);
precision/recall also need the reference images (ADM batches carry them as arr_0).
--save_stats=OUT.npz writes mu/sigma of --samples (to build your own reference), with the protocol.
--protocol: the FID preprocessing (grn_jax/evaluation/fid_protocol.py); 'auto' (default) takes the
one the reference was computed with: torch_fidelity for the official JiT statistics (the GRN
paper's numbers) and the ADM reference batches, the stored one for our own files.
"""

import os
import zipfile
from typing import Any, Iterator

from absl import app
from absl import flags
from absl import logging
import numpy as np

from grn_jax.evaluation import fid_protocol
from grn_jax.evaluation import inception
from grn_jax.evaluation import metrics
from grn_jax.evaluation import reference
from grn_jax.sampling import outputs

IMAGE_KEYS = ("images", "arr_0")


def iter_npz_images(path: str, batch_size: int, key: str | None = None,
                    limit: int = -1) -> Iterator[np.ndarray]:
  """Streams uint8 [B, H, W, 3] batches from an uncompressed or compressed npz entry."""
  with zipfile.ZipFile(os.path.expanduser(path)) as archive:
    names = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    key = key or next((k for k in IMAGE_KEYS if k in names), None)
    if key is None or key not in names:
      raise KeyError(f"{path} holds arrays {names}; expected images under one of {IMAGE_KEYS}.")
    with archive.open(key + ".npy") as f:
      version = np.lib.format.read_magic(f)
      read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                     else np.lib.format.read_array_header_2_0)
      shape, fortran, dtype = read_header(f)
      if fortran or dtype != np.uint8 or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{path}:{key} must be C-order uint8 [N, H, W, 3], got {dtype} {shape}.")
      total = shape[0] if limit <= 0 else min(limit, shape[0])
      item = int(np.prod(shape[1:]))
      for start in range(0, total, batch_size):
        n = min(batch_size, total - start)
        data = f.read(n * item)
        if len(data) != n * item:
          raise ValueError(f"{path}:{key} is truncated at image {start}.")
        yield np.frombuffer(data, np.uint8).reshape(n, *shape[1:])


def iter_folder_images(folder: str, batch_size: int, limit: int = -1) -> Iterator[np.ndarray]:
  """Streams the sorted images of a folder (all must share one size)."""
  from grn_jax.data import images as images_lib  # pylint: disable=g-import-not-at-top
  files = sorted(f for f in os.listdir(folder)
                 if f.lower().endswith(images_lib.IMAGE_EXTENSIONS))
  if limit > 0:
    files = files[:limit]
  if not files:
    raise FileNotFoundError(f"no images in {folder}.")
  for start in range(0, len(files), batch_size):
    yield np.stack([images_lib.load_image(os.path.join(folder, f))
                    for f in files[start:start + batch_size]])


def compute_features(batches: Iterator[np.ndarray], params, batch_size: int,
                     protocol: str = fid_protocol.DEFAULT_PROTOCOL) -> dict[str, np.ndarray]:
  """Inception outputs (pool [N, 2048], logits_unbiased [N, 1008]) of streamed image batches,
  preprocessed by `protocol` (fid_protocol.PROTOCOLS)."""
  feature_fn = inception.make_feature_fn(params, batch_size, protocol=protocol)
  pools, logits = [], []
  count = 0
  for batch in batches:
    out = feature_fn(batch)
    pools.append(out["pool"])
    logits.append(out["logits_unbiased"])
    count += len(batch)
    logging.log_every_n(logging.INFO, "Inception features: %d images", 20, count)
  if not pools:
    raise ValueError("no images found.")
  return dict(pool=np.concatenate(pools), logits_unbiased=np.concatenate(logits))


def evaluate(features: dict[str, np.ndarray], ref: dict[str, np.ndarray],
             ref_features: np.ndarray | None = None, splits: int = 10, k: int = 3
             ) -> dict[str, float]:
  """FID against ref mu/sigma, IS of the logits, and precision/recall against ref_features."""
  mu, sigma = metrics.feature_statistics(features["pool"])
  out: dict[str, Any] = dict(num_images=int(len(features["pool"])))
  out["fid"] = metrics.frechet_distance(mu, sigma, ref["mu"], ref["sigma"])
  out["inception_score"], out["inception_score_std"] = metrics.inception_score(
      features["logits_unbiased"], splits)
  if ref_features is not None:
    out["precision"], out["recall"] = metrics.precision_recall(ref_features, features["pool"], k)
  return out


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("samples", None, "npz with uint8 images (or a folder of images).")
  flags.DEFINE_string("ref", "", "Reference npz with mu, sigma (and arr_0 for P/R).")
  flags.DEFINE_string("inception", "", "FID Inception weights (.npz or pytorch-fid .pth); "
                      "default $GRN_JAX_INCEPTION or ~/.cache/grn_jax/.")
  flags.DEFINE_integer("batch_size", 200, "Inception batch size.")
  flags.DEFINE_integer("num_images", -1, "> 0: only the first N samples.")
  flags.DEFINE_integer("splits", 10, "Inception Score splits.")
  flags.DEFINE_bool("precision_recall", False, "Also precision/recall (k=3) against the "
                    "reference images.")
  flags.DEFINE_string("save_stats", "", "Write mu/sigma of --samples here.")
  flags.DEFINE_string("out_json", "", "Also write the metrics as JSON here.")
  flags.DEFINE_enum("protocol", fid_protocol.AUTO, (fid_protocol.AUTO,) + fid_protocol.PROTOCOLS,
                    "FID preprocessing; auto: the one of --ref (torch_fidelity for the official "
                    "statistics), torch_fidelity without --ref.")
  flags.mark_flags_as_required(["samples"])


def main(argv) -> None:
  del argv
  if not FLAGS.ref and not FLAGS.save_stats:
    raise app.UsageError("pass --ref=STATS.npz (to evaluate) and/or --save_stats=OUT.npz.")
  ref = reference.load_reference(FLAGS.ref, FLAGS.precision_recall) if FLAGS.ref else None
  protocol = fid_protocol.resolve_protocol(FLAGS.protocol, FLAGS.ref,
                                           ref.pop("protocol", None) if ref else None)
  params = inception.load_params(FLAGS.inception or None)
  if os.path.isdir(FLAGS.samples):
    batches = iter_folder_images(FLAGS.samples, FLAGS.batch_size, FLAGS.num_images)
  else:
    batches = iter_npz_images(FLAGS.samples, FLAGS.batch_size, limit=FLAGS.num_images)
  features = compute_features(batches, params, FLAGS.batch_size, protocol)
  if FLAGS.save_stats:
    mu, sigma = metrics.feature_statistics(features["pool"])
    reference.save_stats(FLAGS.save_stats, mu, sigma, protocol=protocol)
    print(f"wrote {FLAGS.save_stats} ({len(features['pool'])} images, protocol {protocol})")
  if ref is None:
    return
  ref_features = None
  if FLAGS.precision_recall:
    images = ref.pop("images")
    ref_features = compute_features(
        (images[i:i + FLAGS.batch_size] for i in range(0, len(images), FLAGS.batch_size)),
        params, FLAGS.batch_size, protocol)["pool"]
  results = dict(evaluate(features, ref, ref_features, FLAGS.splits), protocol=protocol)
  lines = [f"images            {results['num_images']}",
           f"protocol          {protocol}",
           f"FID               {results['fid']:.4f}",
           f"Inception Score   {results['inception_score']:.4f} "
           f"+- {results['inception_score_std']:.4f}"]
  if ref_features is not None:
    lines += [f"precision         {results['precision']:.4f}",
              f"recall            {results['recall']:.4f}"]
  print("\n".join(lines))
  if FLAGS.out_json:
    outputs.save_json(FLAGS.out_json, results)


def run_cli() -> None:
  """Console script `grn-fid` (= python -m grn_jax.evaluation.fid)."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run_cli()
