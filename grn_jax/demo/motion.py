"""Moving digits for the prompt-to-motion demo: clips and their direction read-out.

A clip puts one digit (greyscale [s, s]) on a larger black canvas [S, S] and slides it, frame by
frame at a constant speed, from one edge of the canvas to the opposite one along the named
direction; across the motion it stays centred. With S - s = 8 k pixels and 9 frames the digit
moves k pixels a frame (16-pixel digits on a 32-pixel canvas: 2 pixels).

The read-out for generated clips is the centre of mass of each frame's ink: its displacement
from the first to the last frame names the direction whose axis and sign it follows most, and
the motion counts as correct when that direction is the prompt's and the shift is at least
`MIN_SHIFT_FRACTION` of the clip's full travel. Each frame's digit is read by cropping an
[s, s] window around that centre and classifying it (`frame_crops`).
"""

import numpy as np

from grn_jax.demo import captions

NUM_FRAMES = 9
# (dy, dx) of each direction in image coordinates (rows grow downwards).
UNIT = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
MIN_SHIFT_FRACTION = 0.25


def make_clips(gray: np.ndarray, directions, canvas: int, num_frames: int = NUM_FRAMES
               ) -> np.ndarray:
  """Each digit sliding across the canvas in its direction.

  Args:
    gray: float [N, s, s] digits in [0, 1] (0 = background), s < canvas.
    directions: N names from captions.DIRECTIONS.
    canvas: S, the frame side; (S - s) must be a multiple of num_frames - 1.
    num_frames: T.

  Returns:
    float32 [N, T, S, S] in [0, 1].
  """
  gray = np.asarray(gray, np.float32)
  if gray.ndim != 3 or gray.shape[1] != gray.shape[2]:
    raise ValueError(f"expected square digits [N, s, s], got shape {gray.shape}.")
  if len(directions) != len(gray):
    raise ValueError(f"need one direction per digit: {len(directions)} for {len(gray)}.")
  bad = sorted(set(directions) - set(captions.DIRECTIONS))
  if bad:
    raise ValueError(f"unknown directions {bad}; use {captions.DIRECTIONS}.")
  size = gray.shape[1]
  travel = canvas - size
  if travel <= 0 or travel % (num_frames - 1):
    raise ValueError(f"canvas - digit size = {canvas} - {size} must be a positive multiple of "
                     f"num_frames - 1 = {num_frames - 1}.")
  speed = travel // (num_frames - 1)
  middle = travel // 2
  clips = np.zeros((len(gray), num_frames, canvas, canvas), np.float32)
  for i, (digit, direction) in enumerate(zip(gray, directions)):
    dy, dx = UNIT[direction]
    for t in range(num_frames):
      # Start at the edge the motion leaves from, end at the opposite one.
      y = middle if dy == 0 else (t * speed if dy > 0 else travel - t * speed)
      x = middle if dx == 0 else (t * speed if dx > 0 else travel - t * speed)
      clips[i, t, y:y + size, x:x + size] = digit
  return clips


def centres_of_mass(frames: np.ndarray) -> np.ndarray:
  """float [..., H, W] ink (>= 0) -> float64 [..., 2] (row, column) of its centre of mass;
  an empty frame gives the canvas centre."""
  frames = np.asarray(frames, np.float64)
  h, w = frames.shape[-2:]
  mass = frames.sum(axis=(-2, -1))
  rows = (frames.sum(axis=-1) * np.arange(h)).sum(-1)
  cols = (frames.sum(axis=-2) * np.arange(w)).sum(-1)
  safe = np.where(mass > 0, mass, 1.0)
  return np.stack([np.where(mass > 0, rows / safe, (h - 1) / 2),
                   np.where(mass > 0, cols / safe, (w - 1) / 2)], axis=-1)


def read_directions(clips: np.ndarray, travel: float) -> tuple[np.ndarray, np.ndarray]:
  """The direction each clip moves in and by how much.

  Args:
    clips: float [N, T, H, W] ink in [0, 1].
    travel: the full travel of the training clips in pixels (canvas - digit size).

  Returns:
    (str [N] the direction of captions.DIRECTIONS whose unit vector has the largest dot product
     with the first-to-last displacement of the centre of mass, or "none" when that product is
     below MIN_SHIFT_FRACTION * travel; float64 [N] that product in pixels).
  """
  clips = np.asarray(clips)
  if clips.ndim != 4:
    raise ValueError(f"expected clips [N, T, H, W], got shape {clips.shape}.")
  com = centres_of_mass(clips)
  shift = com[:, -1] - com[:, 0]                                      # [N, 2]
  units = np.array([UNIT[d] for d in captions.DIRECTIONS], np.float64)  # [4, 2]
  along = shift @ units.T                                             # [N, 4]
  best = along.argmax(axis=1)
  amount = along[np.arange(len(clips)), best]
  names = np.array(captions.DIRECTIONS)[best]
  return np.where(amount >= MIN_SHIFT_FRACTION * travel, names, "none"), amount


def frame_crops(frames: np.ndarray, size: int) -> np.ndarray:
  """[size, size] windows centred on each frame's centre of mass (the frame padded with
  background, so a window may reach past its edge): the ink centred the same way whatever its
  position, as MNIST centres its digits. Applied to real digits, the training images of the
  classifier that reads generated frames.

  Args:
    frames: float [N, H, W] in [0, 1].
    size: the crop side (the digit size of the clips).

  Returns:
    float32 [N, size, size].
  """
  frames = np.asarray(frames, np.float32)
  if frames.ndim != 3:
    raise ValueError(f"expected frames [N, H, W], got shape {frames.shape}.")
  padded = np.pad(frames, ((0, 0), (size, size), (size, size)))
  com = centres_of_mass(frames) + size
  top = np.round(com[:, 0] - (size - 1) / 2).astype(int)
  left = np.round(com[:, 1] - (size - 1) / 2).astype(int)
  return np.stack([f[y:y + size, x:x + size] for f, y, x in zip(padded, top, left)])
