"""The demos' word-level tokenizer file and frozen random umT5 features."""

import numpy as np
import pytest

from configs import umt5 as umt5_configs
from grn_jax import text
from grn_jax.demo import captions
from grn_jax.demo import text_features

PROMPTS = [captions.fill(t, d) for t in captions.IMAGE_HELD_OUT for d in range(10)]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
  words = captions.vocabulary(PROMPTS + ["a handwritten seven"])
  path = text_features.write_tokenizer(words, str(tmp_path_factory.mktemp("tok")))
  return text_features.frozen_encoder(umt5_configs.text_encoder_config("tiny"), path)


def test_tokenizer_file_maps_words_to_their_ids(encoder):
  vocab = dict(zip(text_features.SPECIAL_TOKENS, range(3)))
  words = captions.vocabulary(PROMPTS + ["a handwritten seven"])
  vocab.update({w: i + 3 for i, w in enumerate(words)})
  ids = encoder.tokenizer.token_ids(["Hand-drawn 7", "a handwritten seven, moon"])
  assert ids == [[vocab["hand-drawn"], vocab["7"], 1],
                 [vocab["a"], vocab["handwritten"], vocab["seven"], vocab[","], 2, 1]]


def test_write_tokenizer_rejects_duplicates_and_specials(tmp_path):
  with pytest.raises(ValueError, match="distinct words"):
    text_features.write_tokenizer(["a", "a"], str(tmp_path))
  with pytest.raises(ValueError, match="distinct words"):
    text_features.write_tokenizer(["a", "</s>"], str(tmp_path))


def test_vocabulary_larger_than_the_encoder_fails(tmp_path):
  path = text_features.write_tokenizer([f"w{i}" for i in range(400)], str(tmp_path))
  with pytest.raises(ValueError, match="vocab_size=384"):
    text_features.frozen_encoder(umt5_configs.text_encoder_config("tiny"), path)


def test_features_are_frozen_and_tell_digits_apart(encoder):
  features, mask = text_features.encode(encoder, PROMPTS, batch_size=20)
  assert features.shape == (40, 16, 32) and features.dtype == np.float32
  lengths = [len(ids) for ids in encoder.tokenizer.token_ids(PROMPTS)]
  np.testing.assert_array_equal(mask.sum(1), lengths)
  assert np.all(features[~mask] == 0)
  # Batching and padding change nothing; the same encoder (random_init, key 0) comes back.
  again, _ = text_features.encode(encoder, PROMPTS[:5], batch_size=20, length=16)
  np.testing.assert_allclose(again, features[:5], atol=1e-5)
  cfg = text_features.encoder_config(umt5_configs.text_encoder_config("tiny"),
                                     encoder.tokenizer.path)
  other, _ = text_features.encode(text.PromptEncoder.from_config(cfg), PROMPTS[:5],
                                  batch_size=20, length=16)
  np.testing.assert_allclose(other, features[:5], atol=1e-5)
  digits = np.tile(np.arange(10), 4)
  phrasings = np.repeat(np.arange(4), 10)
  result = text_features.separation(features, mask, digits, phrasings)
  # Prompts of one phrasing naming different digits are far apart (measured: 0.21 / 0.66).
  assert result["min_digit_distance"] > 0.1 and result["mean_digit_distance"] > 0.4
  # Every phrasing the same prompts: the nearest prompt of another phrasing is the same one.
  same = text_features.separation(np.tile(features[:10], (4, 1, 1)), np.tile(mask[:10], (4, 1)),
                                  digits, phrasings)
  assert same["nearest_digit_accuracy"] == 1.0


def test_pooled_means_valid_rows():
  features = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
  mask = np.array([[True, True, False]])
  np.testing.assert_allclose(text_features.pooled(features, mask), [[2, 3, 4, 5]])
