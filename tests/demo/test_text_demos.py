"""The prompt-to-digit and prompt-to-motion demos: prompt sets, and both at size=test."""

import json
import os

import numpy as np

from configs import demo_t2i
from configs import demo_t2v
from grn_jax import main as grn_main
from grn_jax.demo import captions
from grn_jax.demo import t2i
from grn_jax.demo import t2v


def _train_set(templates, motion):
  directions = captions.DIRECTIONS if motion else (None,)
  return {captions.fill(t, d, s, r) for t in templates for d in range(10)
          for s in captions.STROKES for r in directions}


def test_held_out_prompts_name_their_digit_in_unseen_phrasings():
  prompts, named = t2i.held_out_prompts(30, seed=1)
  assert len(prompts) == 300 and np.array_equal(np.bincount(named), [30] * 10)
  assert not set(prompts) & _train_set(captions.IMAGE_TRAIN, False)
  for prompt, digit in zip(prompts, named):
    words = captions.word_tokens(prompt)
    assert captions.DIGIT_WORDS[digit] in words or str(digit) in words
  assert len(set(prompts[:30])) == 8   # every distinct held-out prompt of digit 0 (3 + 3 + 1 + 1)


def test_training_captions_are_distinct_train_phrasings():
  classes, strokes = np.array([3, 7]), np.array(["thin", ""])
  index, texts = t2i.training_captions(classes, strokes, 3, seed=0)
  np.testing.assert_array_equal(index, [0, 0, 0, 1, 1, 1])
  assert len(set(texts[:3])) == 3 and set(texts) <= _train_set(captions.IMAGE_TRAIN, False)
  # With fillers: the same phrasings (same seed) with filler words in some of them.
  index2, filled = t2i.training_captions(classes, strokes, 3, seed=0, filler_prob=1.0)
  np.testing.assert_array_equal(index2, index)
  for plain, text in zip(texts, filled):
    assert text != plain and " ".join(w for w in text.split(" ")
                                      if w not in captions.FILLERS) == plain


def test_motion_prompts_cover_every_digit_and_direction():
  prompts, named, moves = t2v.motion_prompts(2, seed=0)
  assert len(prompts) == 80 and not set(prompts) & _train_set(captions.MOTION_TRAIN, True)
  for prompt, digit, direction in zip(prompts, named, moves):
    words = captions.word_tokens(prompt)
    assert direction in words and (captions.DIGIT_WORDS[digit] in words or str(digit) in words)
  assert {(d, m) for d, m in zip(named, moves)} == {(d, m) for d in range(10)
                                                    for m in captions.DIRECTIONS}


def test_t2i_demo_at_test_size(tmp_path):
  config = demo_t2i.get_config("size=test")
  grn_main.validate_config(config)
  summary = grn_main.run(None, config, str(tmp_path))
  with np.load(tmp_path / "samples.npz") as data:
    images, prompts, labels = data["images"], data["prompts"], data["labels"]
  assert images.dtype == np.uint8 and images.shape == (20, 32, 32, 3)
  np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 2))
  assert not set(prompts.tolist()) & _train_set(captions.IMAGE_TRAIN, False)
  assert os.path.exists(tmp_path / "grid.png") and os.path.exists(tmp_path / "text_tokenizer.json")
  assert summary["text_separation"]["min_digit_distance"] > 0
  with open(tmp_path / "summary.json") as f:
    assert set(json.load(f)["timings_seconds"]) >= {"tokenizer", "grn", "sampling"}


def test_t2v_demo_at_test_size(tmp_path):
  config = demo_t2v.get_config("size=test")
  summary = grn_main.run(None, config, str(tmp_path))
  with np.load(tmp_path / "videos.npz") as data:
    videos, named, moves = data["videos"], data["digits"], data["directions"]
  assert videos.dtype == np.uint8 and videos.shape == (40, 9, 32, 32, 3)
  assert set(moves.tolist()) == set(captions.DIRECTIONS) and np.bincount(named).tolist() == [4] * 10
  assert os.path.exists(tmp_path / "videos" / "000000.gif")
  with np.load(tmp_path / "i2v.npz") as data:
    assert data["videos"].shape == (2, 9, 32, 32, 3) and data["images"].shape == (2, 32, 32, 3)
  assert len(summary["i2v_frame0_psnr_db"]) == 2


def test_demo_configs_are_valid_and_bad_fields_are_named():
  import pytest  # pylint: disable=g-import-not-at-top
  from grn_jax.demo import text_demo  # pylint: disable=g-import-not-at-top
  for module, task in ((demo_t2i, "t2i"), (demo_t2v, "t2v")):
    for size in ("default", "test"):
      config = module.get_config(f"size={size}")
      text_demo.validate_config(config, text_demo.demo_fields(task))
      grn_main.validate_config(config)
    config.demo.sample_params = "ema_3"
    with pytest.raises(ValueError, match="config.demo.sample_params"):
      grn_main.validate_config(config)
    config = module.get_config("size=test")
    config.tokenizer_train.reconstruction.num_frames = 4
    with pytest.raises(ValueError, match="config.tokenizer_train .*num_frames"):
      grn_main.validate_config(config)
    with pytest.raises(ValueError, match="size must be"):
      module.get_config("size=big")
  config = demo_t2v.get_config("size=test")
  config.demo.drop_prob = 1.5
  with pytest.raises(ValueError, match="config.demo.drop_prob"):
    grn_main.validate_config(config)
