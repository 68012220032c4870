"""Captions of the text demos: digits in several phrasings, and digits moving in a direction.

A caption names the digit as a word ("seven") or a numeral ("7"), in one of several phrasings
that differ in their words, their order and extra attributes. The attributes are true of the
image: the stroke (`stroke_attributes`: "thin" / "bold" for the lightest / heaviest third of
each class by ink, "" for the middle third) and, for the motion demo, the direction.

The phrasings come in two sets: TRAIN ones caption the training data, HELD_OUT ones (other
words, other orders) are only used to prompt the trained model, so the demos measure whether
the model follows the digit (and direction) named in a phrasing it never saw.

A phrasing is a format string with the fields {word} (digit word), {num} (numeral), {stroke}
(stroke attribute, possibly "") and, for motion, {dir} (one of DIRECTIONS). An empty
attribute leaves no stray word, space or comma behind.
"""

import re
from typing import Sequence

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIRECTIONS = ("left", "right", "up", "down")
# The tokens that name a digit or a direction (captions.drop_words never drops them).
_NAMING_TOKENS = frozenset(DIGIT_WORDS + DIRECTIONS + tuple(str(d) for d in range(10)))

# Numerals and words both occur in the training phrasings, so
# every digit token the held-out prompts use was seen in training.
IMAGE_TRAIN = (
    "a handwritten {word}",
    "the digit {num}",
    "number {word}, {stroke} stroke",
    "a {stroke} {num} written by hand",
    "{word}",
    "handwritten digit {num}",
)
IMAGE_HELD_OUT = (
    "a picture of the number {word}",
    "{num}, drawn with a {stroke} pen",
    "an image showing the digit {word} in {stroke} ink",
    "hand-drawn {num}",
)
# Every motion phrasing names the direction by one of the four DIRECTIONS words (a held-out
# synonym such as "leftwards" would be a word the model never saw with a meaning).
MOTION_TRAIN = (
    "a {word} moving to the {dir}",
    "the digit {num} moves {dir}",
    "number {word} going {dir}, {stroke} stroke",
    "a {stroke} handwritten {num} moving {dir}",
    "{word} slides {dir}",
)
MOTION_HELD_OUT = (
    "a {stroke} {word} travelling {dir}",
    "moving {dir}: the number {num}",
    "{num} heads {dir} across the frame",
)
STROKES = ("", "thin", "bold")
# Words that say nothing about the image. Training captions get some of them at random places
# (`with_fillers`), so the model learns to read the digit (and direction) whatever other words
# surround it, as held-out phrasings do with words it never saw; none of them occurs in a
# phrasing (tests/demo/test_captions.py).
FILLERS = ("sketch", "scan", "black", "white", "small", "large", "neat", "simple", "centred",
           "paper", "style", "figure", "clear", "grey", "quick", "plain", "sample", "shown",
           "here", "old", "tiny", "messy", "photo")
# A token: a lower-case word (letters, digits, inner hyphens) or one punctuation mark; the
# demo's word-level tokenizer (text_features.py) applies it to each white-space separated piece.
WORD_PATTERN = r"[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]"
_SPACES = re.compile(r"\s+")
_EMPTY_STROKE = re.compile(r",? \{stroke\} stroke")


def stroke_attributes(gray: np.ndarray, classes: np.ndarray) -> np.ndarray:
  """The stroke attribute of each digit: ink below / above the class's 1/3 / 2/3 quantiles.

  Args:
    gray: float [N, H, W] greyscale digits in [0, 1] (0 = background).
    classes: int [N] digit of each image.

  Returns:
    str [N]: "thin", "" (medium) or "bold".
  """
  gray, classes = np.asarray(gray, np.float64), np.asarray(classes)
  if gray.ndim != 3 or classes.shape != gray.shape[:1]:
    raise ValueError(f"expected gray [N, H, W] and classes [N], got {gray.shape} and "
                     f"{classes.shape}.")
  ink = gray.reshape(len(gray), -1).sum(axis=1)
  out = np.full(len(gray), "", dtype=object)
  for digit in np.unique(classes):
    rows = classes == digit
    low, high = np.quantile(ink[rows], [1 / 3, 2 / 3])
    out[rows & (ink < low)] = "thin"
    out[rows & (ink > high)] = "bold"
  return out.astype(str)


def fill(template: str, digit: int, stroke: str = "", direction: str | None = None) -> str:
  """One caption: `template` with the digit, its stroke attribute and the direction filled in.

  An empty stroke leaves the attribute out, with the word "stroke" that only it needs
  ("number {word}, {stroke} stroke" -> "number seven"; "a {stroke} {num}" -> "a 7").
  """
  if not 0 <= digit < len(DIGIT_WORDS):
    raise ValueError(f"digit must be in 0..9, got {digit}.")
  if ("{dir}" in template) != (direction is not None):
    raise ValueError(f"template {template!r} and direction {direction!r} do not go together.")
  if direction is not None and direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
  if stroke not in STROKES:
    raise ValueError(f"stroke must be one of {STROKES}, got {stroke!r}.")
  if not stroke:
    template = _EMPTY_STROKE.sub("", template)
  text = template.format(word=DIGIT_WORDS[digit], num=str(digit), stroke=stroke,
                         dir=direction or "")
  return _SPACES.sub(" ", text).strip(" ,")


def captions(templates: Sequence[str], digits: np.ndarray, strokes: np.ndarray,
             directions: Sequence[str] | None = None) -> list[list[str]]:
  """Every template's caption of every example: list [N] of lists [len(templates)]."""
  digits = np.asarray(digits)
  if len(strokes) != len(digits) or (directions is not None and len(directions) != len(digits)):
    raise ValueError(f"digits ({len(digits)}), strokes ({len(strokes)}) and directions must "
                     "have one entry per example.")
  return [[fill(t, int(d), str(s), None if directions is None else directions[i])
           for t in templates] for i, (d, s) in enumerate(zip(digits, strokes))]


def with_fillers(text: str, rng: np.random.Generator, prob: float, max_words: int = 3) -> str:
  """`text` with, with probability `prob`, 1..max_words FILLERS inserted between its words."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"filler probability must be in [0, 1], got {prob}.")
  if rng.random() >= prob:
    return text
  words = text.split(" ")
  for _ in range(rng.integers(1, max_words + 1)):
    words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(FILLERS)))
  return " ".join(words)


def drop_words(text: str, rng: np.random.Generator, prob: float) -> str:
  """`text` with, with probability `prob`, each word that names neither the digit nor the
  direction dropped with probability 1/2 ("the digit 7 moves left" -> "7 moves left", "digit 7
  left", ...): the digit then also comes first, or next to words no phrasing puts it next to."""
  if not 0.0 <= prob <= 1.0:
    raise ValueError(f"word-drop probability must be in [0, 1], got {prob}.")
  if rng.random() >= prob:
    return text
  words = text.split(" ")
  keep = rng.random(len(words)) >= 0.5
  return " ".join(w for w, k in zip(words, keep)
                  if k or not _NAMING_TOKENS.isdisjoint(word_tokens(w)))


def vocabulary(texts: Sequence[str]) -> list[str]:
  """The sorted distinct lower-case words and punctuation marks of `texts` (word_tokens)."""
  return sorted({token for text in texts for token in word_tokens(text)})


def word_tokens(text: str) -> list[str]:
  """Lower-case words (letters, digits, hyphens) and single punctuation marks, in order (the
  split of the demo's word-level tokenizer, grn_jax/demo/text_features.py)."""
  return re.findall(WORD_PATTERN, text.lower())
