"""Label shards: round trips, multiple shards, and clear errors on bad metadata or records."""

import json
import os
import pickle

import numpy as np
import pytest

from grn_jax.data import label_shards as ls


def _examples(n, seed=0, shape=(2, 3, 4), rounds=4):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 2**rounds, (n, *shape), dtype=np.int32)
  classes = rng.integers(0, 1000, n, dtype=np.int32)
  latents = rng.uniform(-1, 1, (n, *shape)).astype(np.float32)
  return labels, classes, latents


def test_round_trip_with_latents(tmp_path):
  labels, classes, latents = _examples(7)
  path = str(tmp_path / ls.shard_filename(0, 1))
  meta = ls.write_records(path, labels, classes, latents, hbq_rounds=4, source="test",
                          skipped=[("a.png", "bad")])
  assert meta.num_examples == 7 and meta.has_latents
  src = ls.LabelShardSource(str(tmp_path))
  assert len(src) == 7 and src.shape == (2, 3, 4) and src.hbq_rounds == 4
  assert src.skipped == [("a.png", "bad")]
  for i in range(7):
    item = src[i]
    assert item["labels"].dtype == np.int32 and item["class_label"].dtype == np.int32
    np.testing.assert_array_equal(item["labels"], labels[i])
    assert int(item["class_label"]) == classes[i]
    np.testing.assert_allclose(item["latent"], latents[i], atol=1e-3)  # float16 storage
    assert item["latent"].dtype == np.float32
  with pytest.raises(IndexError):
    src[7]
  # Picklable for grain workers; the copy reopens its readers.
  copy = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(copy[3]["labels"], labels[3])


def test_multiple_shards_global_order(tmp_path):
  parts = [_examples(n, seed=s, rounds=3) for s, n in enumerate((3, 5, 1))]
  for i, (labels, classes, _) in enumerate(parts):
    ls.write_records(str(tmp_path / ls.shard_filename(i, 3)), labels, classes, hbq_rounds=3)
  src = ls.LabelShardSource(str(tmp_path / "labels-*.array_record"))
  all_labels = np.concatenate([p[0] for p in parts])
  all_classes = np.concatenate([p[1] for p in parts])
  assert len(src) == 9
  for i in range(9):
    item = src[i]
    assert "latent" not in item
    np.testing.assert_array_equal(item["labels"], all_labels[i])
    assert int(item["class_label"]) == all_classes[i]


def test_missing_shard_of_set_is_an_error(tmp_path):
  labels, classes, _ = _examples(2)
  ls.write_records(str(tmp_path / ls.shard_filename(0, 2)), labels, classes, hbq_rounds=4)
  with pytest.raises(ls.ShardFormatError, match="1 of 2 shards are missing"):
    ls.LabelShardSource(str(tmp_path))
  assert len(ls.LabelShardSource(str(tmp_path), allow_partial=True)) == 2


def test_inconsistent_metadata_between_shards(tmp_path):
  labels, classes, _ = _examples(2)
  ls.write_records(str(tmp_path / ls.shard_filename(0, 2)), labels, classes, hbq_rounds=4)
  ls.write_records(str(tmp_path / ls.shard_filename(1, 2)), labels, classes, hbq_rounds=5)
  with pytest.raises(ls.ShardFormatError, match="hbq_rounds"):
    ls.LabelShardSource(str(tmp_path))


def test_metadata_count_mismatch_and_missing_metadata(tmp_path):
  labels, classes, _ = _examples(3)
  path = str(tmp_path / ls.shard_filename(0, 1))
  ls.write_records(path, labels, classes, hbq_rounds=4)
  meta_file = ls.metadata_path(path)
  raw = json.load(open(meta_file))
  raw["num_examples"] = 4
  json.dump(raw, open(meta_file, "w"))
  with pytest.raises(ls.ShardFormatError, match="holds 3 records, its metadata says 4"):
    ls.LabelShardSource(str(tmp_path))
  assert not ls.is_complete_shard(path)
  raw["num_examples"], raw["d"] = 3, 5  # wrong shape -> every record has the wrong size
  json.dump(raw, open(meta_file, "w"))
  with pytest.raises(ls.ShardFormatError, match="corrupt record"):
    ls.LabelShardSource(str(tmp_path))[0]
  raw["bogus"] = 1
  json.dump(raw, open(meta_file, "w"))
  with pytest.raises(ls.ShardFormatError, match="unknown fields"):
    ls.LabelShardSource(str(tmp_path))
  os.remove(meta_file)
  with pytest.raises(ls.ShardFormatError, match="no metadata file"):
    ls.LabelShardSource(str(tmp_path))
  assert not ls.is_complete_shard(path)


def test_truncated_shard_file(tmp_path):
  labels, classes, _ = _examples(20)
  path = str(tmp_path / ls.shard_filename(0, 1))
  ls.write_records(path, labels, classes, hbq_rounds=4)
  assert ls.is_complete_shard(path)
  data = open(path, "rb").read()
  open(path, "wb").write(data[:len(data) // 2])
  assert not ls.is_complete_shard(path)
  with pytest.raises(ls.ShardFormatError, match="truncated or corrupt"):
    ls.LabelShardSource(str(tmp_path))


def test_record_codec_errors():
  meta = ls.ShardMetadata(h=1, w=1, d=2, hbq_rounds=2, num_examples=1)
  good = ls.encode_record(np.array([[[1, 3]]]), 7, hbq_rounds=2)
  item = ls.decode_record(good, meta)
  np.testing.assert_array_equal(item["labels"], [[[1, 3]]])
  assert int(item["class_label"]) == 7
  with pytest.raises(ls.ShardFormatError, match="bad magic"):
    ls.decode_record(b"XXXX" + good[4:], meta)
  with pytest.raises(ls.ShardFormatError, match=">= 2\\^hbq_rounds"):
    ls.decode_record(good[:-1] + bytes([9]), meta)
  with pytest.raises(ValueError, match="must be in \\[0, 4\\)"):
    ls.encode_record(np.array([[[4, 0]]]), 0, hbq_rounds=2)
  with pytest.raises(ls.ShardFormatError, match="hbq_rounds"):
    ls.ShardMetadata(h=1, w=1, d=1, hbq_rounds=9, num_examples=1).validate()


def test_no_shards_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="tokenize_dataset"):
    ls.LabelShardSource(str(tmp_path))
