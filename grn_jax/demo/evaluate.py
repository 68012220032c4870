r"""Are the demo samples recognisable digits of the requested class?

  python -m grn_jax.demo.evaluate --samples=DIR/samples.npz [--samples=DIR/samples_adaptive.npz]

A small MLP classifier (scikit-learn, one hidden layer of 64 ReLU units) is trained on 80% of
the real digits at the resolution of the samples (bicubic upsampling of the 8x8 originals, the
same as the demo's training data) and applied to the samples:
  * accuracy: fraction of samples classified as the class they were generated for;
  * Frechet distance between the classifier's hidden features of all 1,797 real digits and of
    the samples (grn_jax.evaluation.metrics, the FID formula, on a digits network; lower is
    better). For scale, the same distance between the 20% held-out real digits and all real
    digits is printed as `real_floor`;
  * within-class diversity: the mean Euclidean distance between two different samples of one
    class, with every image brought back to the 8x8 greyscale of the original digits (area
    average, values in [0, 1]), averaged over the classes. The same number for the held-out real
    digits (upsampled like the training data, then brought back the same way) is
    `real_within_class_diversity`: samples that all look alike score far below it, a model that
    varies as much as the data scores about the same.
"""

import json
import os
from typing import Any, Callable
import warnings

import numpy as np
from scipy import linalg
from scipy.spatial import distance

from grn_jax.demo import digits
from grn_jax.evaluation import metrics

HIDDEN_UNITS = 64
TRAIN_FRACTION = 0.8


class DigitsClassifier:
  """MLP on greyscale digits [N, H, W] in [0, 1], trained on real digits at one resolution.

  `preprocess` (float [N, H, W] -> float [N, H, W]) maps the real digits before training, e.g.
  centring their ink as the crops of moving digits are (grn_jax/demo/motion.py); `predict`
  expects images mapped the same way.
  """

  def __init__(self, image_size: int, seed: int = 0,
               preprocess: Callable[[np.ndarray], np.ndarray] | None = None):
    from sklearn import neural_network  # pylint: disable=g-import-not-at-top
    self.image_size = image_size
    images, labels = digits.load_digits_gray(image_size)
    if preprocess is not None:
      images = np.asarray(preprocess(images), np.float32)
    order = np.random.default_rng(seed).permutation(len(images))
    cut = int(TRAIN_FRACTION * len(images))
    train, test = order[:cut], order[cut:]
    self.real_images, self.real_labels = images, labels
    self.test_index = test
    self.mlp = neural_network.MLPClassifier(hidden_layer_sizes=(HIDDEN_UNITS,), alpha=1e-3,
                                            max_iter=500, random_state=seed)
    self.mlp.fit(self._flat(images[train]), labels[train])
    self.real_test_accuracy = float(np.mean(self.predict(images[test]) == labels[test]))

  def _flat(self, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.shape[1:] != (self.image_size, self.image_size):
      raise ValueError(f"the classifier was trained on {self.image_size}x{self.image_size} "
                       f"images, got {images.shape[1:]}.")
    return images.reshape(len(images), -1)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """float [N, H, W] in [0, 1] -> int [N] predicted digit."""
    return self.mlp.predict(self._flat(images))

  def features(self, images: np.ndarray) -> np.ndarray:
    """float [N, H, W] in [0, 1] -> float64 [N, 64] hidden ReLU activations."""
    x = self._flat(images).astype(np.float64)
    return np.maximum(x @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0.0)


def write_online_eval_files(classifier: DigitsClassifier, folder: str) -> dict[str, str]:
  """The classifier as an online feature network and its statistics of all real digits.

  grn_jax/evaluation/online.py then computes, inside the sampler's program, the same features
  and Frechet distance as `evaluate_samples` (on the same images).

  Returns:
    dict(feature_net=..., reference=...): the config.eval fields to set.
  """
  from grn_jax.evaluation import online  # pylint: disable=g-import-not-at-top
  from grn_jax.evaluation import reference  # pylint: disable=g-import-not-at-top
  os.makedirs(folder, exist_ok=True)
  paths = dict(feature_net=os.path.join(folder, "digits_classifier.npz"),
               reference=os.path.join(folder, "digits_reference.npz"))
  mlp = classifier.mlp
  online.save_mlp_feature_net(paths["feature_net"], mlp.coefs_[0], mlp.intercepts_[0],
                              mlp.coefs_[1], mlp.intercepts_[1])
  reference.save_stats(paths["reference"],
                       *metrics.feature_statistics(classifier.features(classifier.real_images)))
  return paths


def _frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """grn_jax.evaluation.metrics.frechet_distance of two feature sets [N, F]."""
  # Dead ReLU units make the covariances singular: scipy warns, the distance is still defined.
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", linalg.LinAlgWarning)
    return metrics.frechet_distance(*metrics.feature_statistics(features_a),
                                    *metrics.feature_statistics(features_b))


def to_source_size(gray: np.ndarray) -> np.ndarray:
  """float [N, H, W] -> float64 [N, 8, 8]: the mean of each (H/8 x W/8) block (the inverse of
  the demo's upsampling up to its blur; 8x8 images are returned unchanged)."""
  gray = np.asarray(gray, np.float64)
  size = digits.SOURCE_SIZE
  if gray.ndim != 3 or gray.shape[1] % size or gray.shape[2] % size:
    raise ValueError(f"expected greyscale images [N, H, W] with H and W multiples of {size}, "
                     f"got shape {gray.shape}.")
  n, h, w = gray.shape
  return gray.reshape(n, size, h // size, size, w // size).mean(axis=(2, 4))


def within_class_diversity(gray: np.ndarray, labels: np.ndarray) -> float:
  """Mean over classes of the mean distance between two different images of the class.

  Args:
    gray: float [N, H, W] greyscale images in [0, 1], H and W multiples of 8.
    labels: int [N] class of each image.

  Returns:
    mean over the classes that have >= 2 images of mean_{i < j in class} ||a_i - a_j||_2, where
    a = `to_source_size(gray)` flattened to 64 values.
  """
  small = to_source_size(gray).reshape(len(gray), -1)
  labels = np.asarray(labels)
  if labels.shape != (len(small),):
    raise ValueError(f"labels must be [{len(small)}], got shape {labels.shape}.")
  per_class = [distance.pdist(small[labels == c]).mean() for c in np.unique(labels)
               if np.sum(labels == c) >= 2]
  if not per_class:
    raise ValueError("within-class diversity needs a class with at least 2 images.")
  return float(np.mean(per_class))


def load_samples(path: str) -> tuple[np.ndarray, np.ndarray]:
  """samples.npz -> (images uint8 [N, H, W, C], labels int [N]), validated."""
  with np.load(path) as data:
    missing = {"images", "labels"} - set(data.files)
    if missing:
      raise KeyError(f"{path} lacks {sorted(missing)}; it must hold images uint8 [N, H, W, C] "
                     "and labels int [N].")
    images, labels = data["images"], data["labels"]
  if images.dtype != np.uint8 or images.ndim != 4:
    raise ValueError(f"{path}: images must be uint8 [N, H, W, C], got {images.dtype} "
                     f"{images.shape}.")
  if labels.shape != images.shape[:1] or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{path}: labels must be int [{len(images)}], got {labels.dtype} "
                     f"{labels.shape}.")
  if labels.min() < 0 or labels.max() >= digits.NUM_CLASSES:
    raise ValueError(f"{path}: labels must lie in 0..9, got [{labels.min()}, {labels.max()}].")
  return images, labels


def evaluate_samples(images: np.ndarray, labels: np.ndarray,
                     classifier: DigitsClassifier | None = None) -> dict[str, Any]:
  """Accuracy, Frechet distance and within-class diversity of generated digits.

  Args:
    images: uint8 [N, H, W, C] (or [N, H, W]) generated digits, H == W.
    labels: int [N] the class each image was generated for.
    classifier: a DigitsClassifier at resolution H (trained here when None).

  Returns:
    dict with accuracy, per_class_accuracy (list of 10), frechet_distance, real_floor
    (held-out real vs all real), real_test_accuracy (the classifier on held-out real digits),
    within_class_diversity, real_within_class_diversity (the held-out real digits) and
    num_samples.
  """
  gray = digits.uint8_to_gray(images)
  if gray.shape[1] != gray.shape[2]:
    raise ValueError(f"expected square images, got {gray.shape[1:]}.")
  classifier = classifier or DigitsClassifier(gray.shape[1])
  labels = np.asarray(labels)
  predicted = classifier.predict(gray)
  correct = predicted == labels
  per_class = [float(correct[labels == c].mean()) if np.any(labels == c) else float("nan")
               for c in range(digits.NUM_CLASSES)]
  real_features = classifier.features(classifier.real_images)
  real_test = real_features[classifier.test_index]
  return dict(
      num_samples=int(len(labels)),
      accuracy=float(correct.mean()),
      per_class_accuracy=per_class,
      frechet_distance=_frechet_distance(real_features, classifier.features(gray)),
      real_floor=_frechet_distance(real_features, real_test),
      real_test_accuracy=classifier.real_test_accuracy,
      within_class_diversity=within_class_diversity(gray, labels),
      real_within_class_diversity=within_class_diversity(
          classifier.real_images[classifier.test_index],
          classifier.real_labels[classifier.test_index]),
  )


def format_result(name: str, result: dict[str, Any]) -> str:
  per_class = " ".join(f"{a:.2f}" for a in result["per_class_accuracy"])
  return (f"{name}: {result['num_samples']} samples, accuracy {result['accuracy']:.3f} "
          f"(per class {per_class}), Frechet distance {result['frechet_distance']:.2f} "
          f"(real held-out vs real: {result['real_floor']:.2f}; classifier accuracy on held-out "
          f"real digits {result['real_test_accuracy']:.3f}), within-class diversity "
          f"{result['within_class_diversity']:.3f} (real held-out digits: "
          f"{result['real_within_class_diversity']:.3f})")


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  results, classifiers = {}, {}
  for path in flags.FLAGS.samples:
    images, labels = load_samples(path)
    size = images.shape[1]
    if size not in classifiers:
      classifiers[size] = DigitsClassifier(size)
    results[path] = evaluate_samples(images, labels, classifiers[size])
    print(format_result(path, results[path]), flush=True)
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w") as f:
      json.dump(results, f, indent=2)
    print(f"wrote {flags.FLAGS.json}")


if __name__ == "__main__":
  from absl import app, flags as _flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  _flags.DEFINE_multi_string("samples", None, "samples.npz file(s) with images and labels.")
  _flags.DEFINE_string("json", "", "Optional path for the results as JSON.")
  _flags.mark_flag_as_required("samples")
  app.run(main)
