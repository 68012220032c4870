"""Moving-digit clips, their direction read-out and the evaluation of generated clips."""

import numpy as np
import pytest

from grn_jax import tokenizer_io
from grn_jax.demo import captions
from grn_jax.demo import digits
from grn_jax.demo import evaluate_motion
from grn_jax.demo import motion


def test_make_clips_slides_the_digit_edge_to_edge():
  digit = np.zeros((1, 4, 4), np.float32)
  digit[0, 1, 2] = 1.0                          # one ink pixel at (1, 2) of the digit
  # canvas 12: travel 8 = 1 pixel per frame over 9 frames; across the motion at 8 // 2 = 4.
  for direction, first, last in (("right", (5, 2), (5, 10)), ("left", (5, 10), (5, 2)),
                                 ("down", (1, 6), (9, 6)), ("up", (9, 6), (1, 6))):
    clip = motion.make_clips(digit, [direction], 12)[0]
    assert clip.shape == (9, 12, 12) and clip.sum() == 9
    assert tuple(np.argwhere(clip[0])[0]) == first and tuple(np.argwhere(clip[-1])[0]) == last
    np.testing.assert_allclose(np.abs(np.diff(motion.centres_of_mass(clip), axis=0)).sum(1), 1)
  with pytest.raises(ValueError, match="multiple of num_frames - 1 = 8"):
    motion.make_clips(digit, ["up"], 10)
  with pytest.raises(ValueError, match="unknown directions"):
    motion.make_clips(digit, ["sideways"], 12)


def test_centres_of_mass_known_values():
  frames = np.zeros((3, 4, 6))
  frames[0, 1, 2] = 1.0
  frames[1, 0, 0], frames[1, 3, 5] = 1.0, 3.0   # mass-weighted: (9/4, 15/4)
  np.testing.assert_allclose(motion.centres_of_mass(frames),
                             [[1, 2], [2.25, 3.75], [1.5, 2.5]])   # empty: the centre


@pytest.fixture(scope="module")
def real_clips():
  gray, classes = digits.load_digits_gray(16)
  rows = np.random.default_rng(0).choice(len(gray), 80, replace=False)
  directions = np.array(captions.DIRECTIONS)[np.arange(80) % 4]
  return motion.make_clips(gray[rows], directions, 32), classes[rows], directions


def test_read_directions_of_real_clips(real_clips):
  clips, _, directions = real_clips
  read, amount = motion.read_directions(clips, 16)
  np.testing.assert_array_equal(read, directions)
  np.testing.assert_allclose(amount, 16, atol=1e-9)   # integer shifts: the travel exactly
  opposite = dict(left="right", right="left", up="down", down="up")
  backwards, _ = motion.read_directions(clips[:, ::-1], 16)
  np.testing.assert_array_equal(backwards, [opposite[d] for d in directions])
  still, _ = motion.read_directions(np.repeat(clips[:, :1], 9, axis=1), 16)
  assert set(still) == {"none"}
  short, _ = motion.read_directions(clips[:, :2], 16)   # 2 pixels < a quarter of 16
  assert set(short) == {"none"}


def test_frame_crops_do_not_depend_on_the_position(real_clips):
  clips = real_clips[0]
  crops = motion.frame_crops(clips.reshape(-1, 32, 32), 16).reshape(80, 9, 16, 16)
  np.testing.assert_array_equal(crops, np.repeat(crops[:, :1], 9, axis=1))
  # Nearly all the ink (a digit's ink is not centred in its box: a little falls outside).
  assert np.all(crops.sum((2, 3)) >= 0.9 * clips.sum((2, 3)))   # measured: >= 0.908


def test_evaluate_videos_of_real_clips(real_clips, tmp_path):
  clips, classes, directions = real_clips
  videos = np.asarray(tokenizer_io.to_uint8(digits.gray_to_model(clips)))
  path = str(tmp_path / "videos.npz")
  np.savez(path, videos=videos, digits=classes, directions=directions)
  videos, classes, directions = evaluate_motion.load_videos(path)
  classifier = evaluate_motion.frame_classifier(16)
  result = evaluate_motion.evaluate_videos(videos, classes, directions, 16, classifier)
  assert result["direction_accuracy"] == 1.0 and result["num_videos"] == 80
  assert result["mean_shift_pixels"] == pytest.approx(16, abs=0.1)
  # Every frame of a clip is the real digit, centred: the classifier's real-digit accuracy.
  assert result["frame_accuracy"] >= 0.9 and result["real_test_accuracy"] >= 0.95
  wrong = evaluate_motion.evaluate_videos(videos, (classes + 1) % 10, directions[::-1], 16,
                                          classifier)
  assert wrong["frame_accuracy"] < 0.1 and wrong["direction_accuracy"] == 0.0
  np.savez(path, videos=videos[..., 0], digits=classes, directions=directions)
  with pytest.raises(ValueError, match=r"videos must be uint8 \[N, T, H, W, C\]"):
    evaluate_motion.load_videos(path)
