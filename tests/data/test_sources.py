"""Data sources: the synthetic label source, label-shard records."""

import numpy as np

from configs import c2i as c2i_configs
from grn_jax import hbq
from grn_jax.data import pipeline
from grn_jax.data import sources


def test_synthetic_source_is_deterministic_and_learnable():
  src = sources.SyntheticLabelSource(32, (4, 4, 4), 16, 10, seed=3)
  a, b = src[5], sources.SyntheticLabelSource(32, (4, 4, 4), 16, 10, seed=3)[5]
  np.testing.assert_array_equal(a["labels"], b["labels"])
  assert a["class_labels"] == b["class_labels"]
  other = sources.SyntheticLabelSource(32, (4, 4, 4), 16, 10, seed=4)[5]
  assert not np.array_equal(a["labels"], other["labels"])
  # Examples of one class share ~75% of their labels with the class template.
  same_class = [src[i] for i in range(32) if src[i]["class_labels"] == a["class_labels"]]
  agree = np.mean([np.mean(x["labels"] == src._template(int(a["class_labels"])))
                   for x in same_class])
  assert 0.7 < agree < 0.85
  it = pipeline.build_train_iterator(c2i_configs.get_config("variant=tiny"), rows=(0, 8))
  batch = next(it)
  assert batch["labels"].dtype == np.int32 and batch["labels"].shape == (8, 4, 4, 4)


def test_label_shard_records_convert_ind_to_bit():
  latent = np.random.default_rng(0).uniform(-1, 1, (4, 4, 16)).astype(np.float32)
  ind = np.asarray(hbq.quantize(latent, 4, "ind"))
  record = {"labels": ind, "class_label": 7}
  bit = sources.LabelShardRecord("bit", 4).map(record)
  np.testing.assert_array_equal(bit["labels"], np.asarray(hbq.quantize(latent, 4, "bit")))
  assert bit["class_labels"] == 7
  np.testing.assert_array_equal(sources.LabelShardRecord("ind", 4).map(record)["labels"], ind)
