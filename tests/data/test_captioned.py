"""Captioned examples: records with and without a short caption, and the packed rows' caption
choice (dropout to the empty prompt, the short caption) at their rates, seeded by the row."""

import numpy as np
import pytest

from grn_jax.data import captioned
from grn_jax.data import captioned_media
from grn_jax.data import captioned_shards
from grn_jax.data import packing

DIM = 4


def _example(i: int, short: bool) -> dict:
  example = dict(labels=np.full((1, 1, 2, 8), i % 2, np.uint8), h_div_w=0.5,
                 features=np.full((5, DIM), 1.0 + i, np.float32))
  if short:
    example["short_features"] = np.full((2, DIM), -1.0 - i, np.float32)
  return example


def test_records_round_trip_with_and_without_a_short_caption():
  plain, with_short = _example(3, False), _example(3, True)
  data = captioned_shards.encode_record(plain["labels"], plain["features"], 0.5, "a cat")
  assert data[:4] == b"GRNC"  # the format of shards prepared before short captions
  got = captioned_shards.decode_record(data, DIM)
  assert "short_features" not in got and got["caption"] == "a cat"
  np.testing.assert_array_equal(got["features"], plain["features"])
  data = captioned_shards.encode_record(with_short["labels"], with_short["features"], 0.5,
                                        "a cat. On a mat.", with_short["short_features"])
  got = captioned_shards.decode_record(data, DIM)
  assert data[:4] == b"GRNS" and got["caption"] == "a cat. On a mat."
  np.testing.assert_array_equal(got["labels"], with_short["labels"])
  np.testing.assert_array_equal(got["features"], with_short["features"])
  np.testing.assert_array_equal(got["short_features"], with_short["short_features"])
  with pytest.raises(captioned_shards.ShardFormatError, match="corrupt record"):
    captioned_shards.decode_record(data[:-3], DIM)
  with pytest.raises(captioned_shards.ShardFormatError, match="corrupt record"):
    captioned_shards.decode_record(b"GRNC" + data[4:], DIM)   # a short record read as plain
  with pytest.raises(ValueError, match="short_features must be"):
    captioned_shards.encode_record(plain["labels"], plain["features"], 0.5, "",
                                   np.zeros((2, DIM + 1)))


def test_shards_list_short_lengths_and_the_plan_reserves_the_longer(tmp_path):
  examples = [_example(0, False), _example(1, True)]
  examples[1]["short_features"] = np.ones((7, DIM), np.float32)   # longer than the caption
  path = str(tmp_path / "captioned-00000-of-00001.array_record")
  meta = captioned_shards.write_shard(path, examples, text_dim=DIM, label_dim=8)
  assert meta.text_lengths == (5, 5) and meta.short_text_lengths == (0, 7)
  captioned_shards.write_null_prompt(str(tmp_path), np.zeros((1, DIM)))
  source = captioned_shards.CaptionedShardSource(str(tmp_path))
  np.testing.assert_array_equal(source.lengths()[1], [5, 7])
  assert "short_features" not in source[0] and source[1]["short_features"].shape == (7, DIM)
  arrays = captioned.CaptionedArrays(examples, np.zeros((1, DIM)))
  np.testing.assert_array_equal(arrays.lengths()[1], [5, 7])


def _caption_kinds(short_prob: float, drop_prob: float, rows: int = 400):
  """Per (row, sample): 0 = caption, 1 = short caption, 2 = empty prompt, read from the packed
  features' values."""
  examples = [_example(i, short=i % 2 == 0) for i in range(4)]
  source = captioned.CaptionedArrays(examples, np.zeros((1, DIM)))
  spec = packing.PackingSpec(visual_tokens=12, text_tokens=20, max_samples=4)
  plan = [(0, 1, 2, 3)]
  pack = captioned.PackRow(source, plan, spec, drop_prob, short_prob)
  kinds = np.zeros((rows, 4), np.int64)
  for r in range(rows):
    row = pack.random_map({"row": 0}, np.random.default_rng(r))
    for s in range(4):
      value = row["features"][row["text_ids"] == s + 1][0, 0]
      kinds[r, s] = 0 if value > 0 else (1 if value < 0 else 2)
  return kinds


def test_rows_take_the_short_caption_and_the_empty_prompt_at_their_rates():
  kinds = _caption_kinds(short_prob=0.4, drop_prob=0.1)
  has_short = np.array([True, False, True, False])
  assert not np.any(kinds[:, ~has_short] == 1)          # no short caption: never chosen
  assert np.mean(kinds == 2) == pytest.approx(0.1, abs=0.03)
  # The short caption replaces 40 % of the captions that are not dropped.
  assert np.mean(kinds[:, has_short] == 1) == pytest.approx(0.9 * 0.4, abs=0.05)
  # The drops are drawn first: the same rows drop the same captions with or without short ones.
  np.testing.assert_array_equal(kinds == 2, _caption_kinds(0.0, 0.1) == 2)
  np.testing.assert_array_equal(kinds, _caption_kinds(0.4, 0.1))   # seeded by the row
  assert np.all(_caption_kinds(1.0, 0.0)[:, has_short] == 1)


def test_short_variant_is_the_given_one_or_the_first_sentences():
  caption = "A cat. On a red mat. In the sun. At noon."
  assert captioned_media.short_variant(caption, " a cat ", 0) == "a cat"
  cuts = {captioned_media.short_variant(caption, "", seed) for seed in range(40)}
  # k uniform in [2, 4] sentences; k = 4 is the caption itself: no short variant.
  assert cuts == {"A cat. On a red mat.", "A cat. On a red mat. In the sun.", ""}
  assert captioned_media.short_variant(caption, "", 7) == captioned_media.short_variant(
      caption, "", 7)
  assert captioned_media.short_variant("A cat. On a mat.", "", 0) == ""   # two sentences
  assert captioned_media.short_variant("a cat", "a cat", 0) == ""
