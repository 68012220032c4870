"""Input pipeline: determinism, per-process rows, iterator state, sources, transforms."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import c2i as c2i_configs
from grn_jax import hbq
from grn_jax import sharding
from grn_jax.data import online_tokenizer
from grn_jax.data import pipeline
from grn_jax.data import sources
from grn_jax.data import transforms


def _config(**overrides):
  config = c2i_configs.get_config("variant=tiny")
  config.update(overrides)
  return config


def _index_dataset(n=64):
  """Labels that encode the example index (labels[0, 0, 0] = i % 16, class = i // 16 % 10)."""
  labels = np.zeros((n, 4, 4, 4), np.int32)
  labels[:, 0, 0, 0] = np.arange(n) % 16
  labels[:, 0, 0, 1] = np.arange(n) // 16
  return labels, (np.arange(n) % 10).astype(np.int32)


def _ids(batch):
  return batch["labels"][:, 0, 0, 0] + 16 * batch["labels"][:, 0, 0, 1]


def test_arrays_epochs_are_permutations_and_reshuffled():
  config = _config(global_batch_size=8)
  config.data.source = "arrays"
  it = pipeline.build_train_iterator(config, _index_dataset(), rows=(0, 8))
  epoch1 = np.concatenate([_ids(next(it)) for _ in range(8)])
  epoch2 = np.concatenate([_ids(next(it)) for _ in range(8)])
  np.testing.assert_array_equal(np.sort(epoch1), np.arange(64))
  np.testing.assert_array_equal(np.sort(epoch2), np.arange(64))
  assert not np.array_equal(epoch1, epoch2) and not np.array_equal(epoch1, np.arange(64))


def test_process_rows_assemble_the_global_batch_and_state_restores():
  config = _config(global_batch_size=8)
  config.data.source = "arrays"
  data = _index_dataset()
  whole = pipeline.build_train_iterator(config, data, rows=(0, 8))
  first = pipeline.build_train_iterator(config, data, rows=(0, 4))
  second = pipeline.build_train_iterator(config, data, rows=(4, 8))
  for _ in range(10):  # crosses an epoch boundary
    got = np.concatenate([_ids(next(first)), _ids(next(second))])
    np.testing.assert_array_equal(got, _ids(next(whole)))
  state = first.get_state()
  expected = [_ids(next(first)) for _ in range(3)]
  again = pipeline.build_train_iterator(config, data, rows=(0, 4))
  again.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(_ids(next(again)), want)


def test_process_rows_from_sharding_on_one_process():
  mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1))
  assert pipeline.process_rows(16, sharding.batch_sharding(mesh, 1)) == (0, 16)
  assert pipeline.process_rows(16) == (0, 16)


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
  it = pipeline.build_train_iterator(_config(), rows=(0, 8))
  batch = next(it)
  assert batch["labels"].dtype == np.int32 and batch["labels"].shape == (8, 4, 4, 4)


def test_bad_inputs_raise():
  config = _config()
  config.data.source = "arrays"
  labels, classes = _index_dataset()
  bad = labels.copy()
  bad[:, 1, 1, 1] = 16
  it = pipeline.build_train_iterator(config, (bad, classes), rows=(0, 8))
  with pytest.raises(ValueError, match=r"HBQ labels must lie in \[0, 16\)"):
    next(it)
  with pytest.raises(ValueError, match="class labels must lie"):
    next(pipeline.build_train_iterator(config, (labels, classes + 10), rows=(0, 8)))
  with pytest.raises(ValueError, match="dataset must be"):
    sources.ArrayLabelSource(labels[:, 0], classes)
  config.data.update(source="folder", data_dir="/nonexistent", image_size=128)
  with pytest.raises(ValueError, match="must be 16"):
    pipeline.validate_data_config(config)
  config.data.source = "webdataset"
  with pytest.raises(ValueError, match="config.data.source"):
    pipeline.validate_data_config(config)


def test_adm_center_crop_values():
  ramp = np.tile((np.arange(768) // 3).astype(np.uint8)[None, :, None], (512, 1, 3))
  out = transforms.center_crop_adm(ramp, 256)
  assert out.shape == (256, 256, 3)
  # Short side 512 = 2 * 256: one BOX halving (pairs averaged), scale 1, centre columns.
  cols = ramp[0, :, 0].astype(np.float64).reshape(-1, 2).mean(axis=1)[64:320]
  assert np.abs(out[100, :, 0] - cols).max() <= 1
  small = np.full((40, 60, 3), 77, np.uint8)
  np.testing.assert_array_equal(transforms.center_crop_adm(small, 64), 77)


def test_image_folder_pipeline(tmp_path):
  rng = np.random.default_rng(0)
  for name, n in (("b_second", 5), ("a_first", 11)):
    (tmp_path / name).mkdir()
    for i in range(n):
      image = rng.integers(0, 255, (70 + i, 90, 3), dtype=np.uint8)
      Image.fromarray(image).save(tmp_path / name / f"{i}.png")
  (tmp_path / "a_first" / "notes.txt").write_text("not an image")
  src = sources.ImageFolderSource(str(tmp_path))
  assert src.classes == ["a_first", "b_second"] and len(src) == 16
  assert src[0]["class_labels"] == 0 and src[15]["class_labels"] == 1
  config = _config(global_batch_size=16)
  config.data.update(source="folder", data_dir=str(tmp_path))
  batch = next(pipeline.build_train_iterator(config, rows=(0, 16)))
  again = next(pipeline.build_train_iterator(config, rows=(0, 16)))
  np.testing.assert_array_equal(batch["image"], again["image"])
  assert batch["image"].shape == (16, 64, 64, 3) and batch["image"].dtype == np.uint8
  crops = {tuple(transforms.center_crop_adm(src[i]["image"], 64)[0, :4, 0]): i
           for i in range(16)}
  flips = 0
  for image in batch["image"]:
    key = tuple(image[0, :4, 0])
    if key not in crops:  # flipped: the mirror of some crop
      key = tuple(image[0, ::-1][:4, 0])
      flips += 1
    assert key in crops
  assert 0 < flips < 16
  with pytest.raises(FileNotFoundError, match="class sub-folders"):
    sources.ImageFolderSource(str(tmp_path / "a_first" / "notes.txt"))


def test_label_shard_records_convert_ind_to_bit():
  latent = np.random.default_rng(0).uniform(-1, 1, (4, 4, 16)).astype(np.float32)
  ind = np.asarray(hbq.quantize(latent, 4, "ind"))
  record = {"labels": ind, "class_label": 7}
  bit = sources.LabelShardRecord("bit", 4).map(record)
  np.testing.assert_array_equal(bit["labels"], np.asarray(hbq.quantize(latent, 4, "bit")))
  assert bit["class_labels"] == 7
  np.testing.assert_array_equal(sources.LabelShardRecord("ind", 4).map(record)["labels"], ind)


class _PoolTokenizer(nn.Module):
  """Stand-in for the HBQ tokenizer: 16x16 mean pool -> dense -> tanh."""
  latent_dim: int

  @nn.compact
  def encode(self, images):
    b, h, w, c = images.shape
    pooled = images.reshape(b, h // 16, 16, w // 16, 16, c).mean(axis=(2, 4))
    return jnp.tanh(nn.Dense(self.latent_dim, name="proj")(pooled) * 4)

  def __call__(self, images):
    return self.encode(images)


def test_online_encoder_quantizes_tokenizer_latents(monkeypatch):
  import grn_jax.models as models  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(models, "build_tokenizer", lambda cfg: _PoolTokenizer(cfg.latent_dim))
  config = _config()
  mesh = sharding.make_mesh(config.mesh)
  with pytest.raises(ValueError, match="tokenizer_random_init"):
    online_tokenizer.make_label_encoder(config, mesh)
  config.data.tokenizer_random_init = True
  encode = online_tokenizer.make_label_encoder(config, mesh)
  images = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
  labels = np.asarray(encode(sharding.shard_host_batch(images, mesh)))
  module = _PoolTokenizer(4)
  params = online_tokenizer.load_tokenizer_params(config, module, 64)
  latent = module.apply({"params": params}, images / 255.0 * 2 - 1, method="encode")
  np.testing.assert_array_equal(labels, np.asarray(hbq.quantize(latent, 4, "ind")))
  assert labels.shape == (8, 4, 4, 4) and len(np.unique(labels)) > 4
  config.data.tokenizer_random_init = False
  config.tokenizer.checkpoint = "hf://bytedance-research/GRN/x.ckpt"
  with pytest.raises(ValueError, match="convert it first"):
    online_tokenizer.make_label_encoder(config, mesh)
