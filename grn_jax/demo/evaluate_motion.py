r"""Do the generated clips show the digit the prompt names, moving the way it says?

  python -m grn_jax.demo.evaluate_motion --videos=DIR/videos.npz [--digit_size=16] [--json=F]

`videos.npz` holds videos uint8 [N, T, H, W, C], digits int [N] and directions str [N] (the
prompt's). Every frame is cropped to a digit-sized window centred on its ink
(motion.frame_crops) and read by the digits classifier of grn_jax/demo/evaluate.py trained on
real digits centred the same way: `frame_accuracy` is the fraction of frames read as the named
digit. `direction_accuracy` is the fraction of clips whose centre of mass moves in the named
direction by at least a quarter of the training clips' travel (motion.read_directions).
"""

import json
from typing import Any

import numpy as np

from grn_jax.demo import captions
from grn_jax.demo import digits
from grn_jax.demo import evaluate
from grn_jax.demo import motion


def frame_classifier(digit_size: int, seed: int = 0) -> evaluate.DigitsClassifier:
  """The digits classifier on real digits whose ink is centred as in `motion.frame_crops`."""
  return evaluate.DigitsClassifier(digit_size, seed,
                                   preprocess=lambda x: motion.frame_crops(x, digit_size))


def load_videos(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """videos.npz -> (videos uint8 [N, T, H, W, C], digits int [N], directions str [N])."""
  with np.load(path) as data:
    missing = {"videos", "digits", "directions"} - set(data.files)
    if missing:
      raise KeyError(f"{path} lacks {sorted(missing)}; it must hold videos uint8 "
                     "[N, T, H, W, C], digits int [N] and directions str [N].")
    videos, named, directions = data["videos"], data["digits"], data["directions"]
  if videos.dtype != np.uint8 or videos.ndim != 5:
    raise ValueError(f"{path}: videos must be uint8 [N, T, H, W, C], got {videos.dtype} "
                     f"{videos.shape}.")
  if named.shape != videos.shape[:1] or directions.shape != videos.shape[:1]:
    raise ValueError(f"{path}: digits and directions must be [{len(videos)}], got "
                     f"{named.shape} and {directions.shape}.")
  return videos, named.astype(int), directions.astype(str)


def evaluate_videos(videos: np.ndarray, named_digits: np.ndarray, directions: np.ndarray,
                    digit_size: int, classifier: evaluate.DigitsClassifier | None = None
                    ) -> dict[str, Any]:
  """Digit accuracy over every frame and direction correctness of generated clips.

  Args:
    videos: uint8 [N, T, S, S, C] (or [N, T, S, S]).
    named_digits: int [N] the digit each prompt names.
    directions: str [N] the direction each prompt names (captions.DIRECTIONS).
    digit_size: s, the side of the digits in the training clips (travel = S - s).
    classifier: `frame_classifier(digit_size)` (trained here when None).

  Returns:
    num_videos, frame_accuracy, per_digit_frame_accuracy (10), video_accuracy (clips whose
    majority-vote digit is the named one), direction_accuracy, per_direction_accuracy (one per
    captions.DIRECTIONS), mean_shift_pixels (along the named direction), real_test_accuracy.
  """
  videos = np.asarray(videos)
  n, t = videos.shape[:2]
  gray = digits.uint8_to_gray(videos.reshape((n * t,) + videos.shape[2:]))
  canvas = gray.shape[1]
  named_digits, directions = np.asarray(named_digits), np.asarray(directions).astype(str)
  classifier = classifier or frame_classifier(digit_size)
  read = classifier.predict(motion.frame_crops(gray, digit_size)).reshape(n, t)
  correct = read == named_digits[:, None]
  votes = np.array([np.bincount(row, minlength=digits.NUM_CLASSES).argmax() for row in read])
  moved, _ = motion.read_directions(gray.reshape(n, t, canvas, canvas), canvas - digit_size)
  units = np.array([motion.UNIT[d] for d in directions], np.float64)
  com = motion.centres_of_mass(gray.reshape(n, t, canvas, canvas))
  along = ((com[:, -1] - com[:, 0]) * units).sum(-1)
  right_way = moved == directions
  return dict(
      num_videos=int(n),
      frame_accuracy=float(correct.mean()),
      per_digit_frame_accuracy=[float(correct[named_digits == d].mean())
                                if np.any(named_digits == d) else float("nan")
                                for d in range(digits.NUM_CLASSES)],
      video_accuracy=float(np.mean(votes == named_digits)),
      direction_accuracy=float(right_way.mean()),
      per_direction_accuracy=[float(right_way[directions == d].mean())
                              if np.any(directions == d) else float("nan")
                              for d in captions.DIRECTIONS],
      mean_shift_pixels=float(along.mean()),
      real_test_accuracy=classifier.real_test_accuracy,
  )


def format_result(name: str, result: dict[str, Any]) -> str:
  per_dir = " ".join(f"{d} {a:.2f}" for d, a in zip(captions.DIRECTIONS,
                                                   result["per_direction_accuracy"]))
  return (f"{name}: {result['num_videos']} clips, frame digit accuracy "
          f"{result['frame_accuracy']:.3f} (clips by majority {result['video_accuracy']:.3f}; "
          f"real held-out digits {result['real_test_accuracy']:.3f}), direction accuracy "
          f"{result['direction_accuracy']:.3f} ({per_dir}), mean shift along the named "
          f"direction {result['mean_shift_pixels']:.1f} px")


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  videos, named, directions = load_videos(flags.FLAGS.videos)
  result = evaluate_videos(videos, named, directions, flags.FLAGS.digit_size)
  print(format_result(flags.FLAGS.videos, result), flush=True)
  if flags.FLAGS.json:
    with open(flags.FLAGS.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"wrote {flags.FLAGS.json}")


if __name__ == "__main__":
  from absl import app, flags as _flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  _flags.DEFINE_string("videos", None, "videos.npz of the prompt-to-motion demo.", required=True)
  _flags.DEFINE_integer("digit_size", 16, "side of the digits in the training clips (pixels).")
  _flags.DEFINE_string("json", "", "optional path to write the result as JSON.")
  app.run(main)
