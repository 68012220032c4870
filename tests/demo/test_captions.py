"""Captions of the text demos: phrasings, attributes, the held-out split, the word split."""

import numpy as np
import pytest

from grn_jax.demo import captions


def test_fill_known_captions():
  assert captions.fill("a handwritten {word}", 7) == "a handwritten seven"
  assert captions.fill("the digit {num}", 7) == "the digit 7"
  assert captions.fill("number {word}, {stroke} stroke", 7, "thin") == "number seven, thin stroke"
  # An empty stroke leaves no "stroke", comma or double space behind.
  assert captions.fill("number {word}, {stroke} stroke", 7) == "number seven"
  assert captions.fill("a {stroke} {num} written by hand", 2) == "a 2 written by hand"
  assert (captions.fill("a {word} moving to the {dir}", 3, direction="left")
          == "a three moving to the left")
  assert (captions.fill("moving {dir}: the number {num}", 0, "bold", "down")
          == "moving down: the number 0")


@pytest.mark.parametrize("kwargs, match", [
    (dict(digit=10), "0..9"), (dict(digit=3, direction="left"), "do not go together"),
    (dict(digit=3, stroke="wide"), "stroke must be")])
def test_fill_rejects_bad_fields(kwargs, match):
  with pytest.raises(ValueError, match=match):
    captions.fill("the digit {num}", **kwargs)
  with pytest.raises(ValueError, match="direction must be"):
    captions.fill("{word} slides {dir}", 3, direction="sideways")


def _all_captions(templates, motion):
  directions = captions.DIRECTIONS if motion else (None,)
  return {captions.fill(t, d, s, r) for t in templates for d in range(10)
          for s in captions.STROKES for r in directions}


@pytest.mark.parametrize("train, held_out, motion", [
    (captions.IMAGE_TRAIN, captions.IMAGE_HELD_OUT, False),
    (captions.MOTION_TRAIN, captions.MOTION_HELD_OUT, True)])
def test_held_out_phrasings_are_new_but_use_known_digit_words(train, held_out, motion):
  train_set, held_set = _all_captions(train, motion), _all_captions(held_out, motion)
  assert not train_set & held_set                 # no held-out prompt was a training caption
  train_words = set(captions.vocabulary(sorted(train_set)))
  for digit in range(10):                         # digit word and numeral both trained
    assert {captions.DIGIT_WORDS[digit], str(digit)} <= train_words
  if motion:
    assert set(captions.DIRECTIONS) <= train_words
  # The held-out phrasings bring words the training captions never use.
  assert set(captions.vocabulary(sorted(held_set))) - train_words


def test_stroke_attributes_split_each_class_in_thirds_by_ink():
  rng = np.random.default_rng(0)
  classes = np.repeat([1, 4], 9)
  ink = rng.permutation(9).astype(float)
  gray = np.zeros((18, 4, 4))
  gray[:9, 0, 0] = ink / 10                       # class 1: ink 0.0 .. 0.8
  gray[9:, :2, :2] = (ink / 10)[:, None, None]    # class 4: 4x the ink, same order
  strokes = captions.stroke_attributes(gray, classes)
  expected = np.where(ink < 3, "thin", np.where(ink > 5, "bold", ""))
  np.testing.assert_array_equal(strokes[:9], expected)
  np.testing.assert_array_equal(strokes[9:], expected)
  with pytest.raises(ValueError, match="expected gray"):
    captions.stroke_attributes(gray[:, 0], classes)


def test_captions_one_list_per_example():
  out = captions.captions(("the digit {num} moves {dir}", "{word} slides {dir}"),
                          np.array([1, 2]), np.array(["", "bold"]), ["up", "left"])
  assert out == [["the digit 1 moves up", "one slides up"],
                 ["the digit 2 moves left", "two slides left"]]
  assert captions.captions(("a {stroke} {num}",), np.array([5]), np.array(["thin"])) == [
      ["a thin 5"]]
  with pytest.raises(ValueError, match="one entry per example"):
    captions.captions(("the digit {num}",), np.array([1, 2]), np.array([""]))


def test_word_tokens_and_vocabulary():
  assert captions.word_tokens("Hand-drawn 7, moving LEFT: now") == [
      "hand-drawn", "7", ",", "moving", "left", ":", "now"]
  assert captions.vocabulary(["b a", "a, c"]) == [",", "a", "b", "c"]


def test_fillers_are_inserted_words_no_phrasing_uses():
  phrasings = (captions.IMAGE_TRAIN + captions.IMAGE_HELD_OUT + captions.MOTION_TRAIN
               + captions.MOTION_HELD_OUT)
  used = set(captions.vocabulary(sorted(_all_captions(captions.IMAGE_TRAIN
                                                      + captions.IMAGE_HELD_OUT, False)
                                        | _all_captions(captions.MOTION_TRAIN
                                                        + captions.MOTION_HELD_OUT, True))))
  assert phrasings and not set(captions.FILLERS) & used
  assert all(captions.word_tokens(f) == [f] for f in captions.FILLERS)  # one token each
  rng = np.random.default_rng(0)
  text = "number seven, thin stroke"
  out = [captions.with_fillers(text, rng, 0.5) for _ in range(400)]
  changed = [o for o in out if o != text]
  assert 150 < len(changed) < 250                 # about half
  for o in changed:                               # the caption's words, in order, plus fillers
    words = o.split(" ")
    assert [w for w in words if w not in captions.FILLERS] == text.split(" ")
    assert 1 <= len(words) - len(text.split(" ")) <= 3
  assert captions.with_fillers(text, rng, 0.0) == text
  with pytest.raises(ValueError, match="filler probability"):
    captions.with_fillers(text, rng, 1.5)


def test_dropped_words_keep_the_digit_and_the_direction():
  text = "the digit 7 moves left"
  rng = np.random.default_rng(0)
  out = [captions.drop_words(text, rng, 0.5) for _ in range(400)]
  changed = [o for o in out if o != text]
  assert 120 < len(changed) < 200      # half of them try, 1/8 of those keep all three words
  for o in out:
    words = o.split(" ")
    assert "7" in words and "left" in words
    assert words == [w for w in text.split(" ") if w in words]   # order kept
  assert "7 left" in out and any(o.startswith("7 ") for o in changed)
  assert captions.drop_words("number seven, thin stroke going up", rng, 1.0).split(" ")[-1] == "up"
  again = np.random.default_rng(0)
  assert [captions.drop_words(text, again, 0.5) for _ in range(400)] == out   # seeded
  assert captions.drop_words(text, rng, 0.0) == text
  with pytest.raises(ValueError, match="word-drop probability"):
    captions.drop_words(text, rng, 2.0)
