"""Input pipeline: determinism, per-process rows, iterator state, image folders."""

import numpy as np
import pytest
from PIL import Image

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.data import pipeline
from grn_jax.data import images as images_lib
from grn_jax.data import sources


def _config(**train_overrides):
  config = c2i_configs.get_config("variant=tiny")
  config.train.update(train_overrides)
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
  crops = {tuple(images_lib.center_crop_adm(src[i]["image"], 64)[0, :4, 0]): i
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


def test_bad_images_are_skipped_counted_and_limited(tmp_path, caplog):
  (tmp_path / "c").mkdir()
  names = ["a.PNG", "b.tif", "c.gif", "d.Jpeg", "e.WEBP", "f.png", "g.png", "h.png"]
  for i, name in enumerate(names):  # every extension, any case
    image = np.full((64, 64, 3), 20 * i, np.uint8)
    Image.fromarray(image).save(tmp_path / "c" / name, format=None if i < 5 else "PNG")
  (tmp_path / "c" / "f.png").write_bytes(b"")                    # empty
  (tmp_path / "c" / "g.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "c" / "h.png")  # too small
  folder = sources.ImageFolderSource(str(tmp_path))
  assert len(folder) == 8
  safe = sources.SkipBadImages(folder, 64)
  # f, g, h are bad: element 5 is the next good image (a, wrapping round), marked with f.
  assert safe[5]["bad_index"] == 5 and safe[5]["image"][0, 0, 0] == 0
  assert safe[7]["bad_index"] == 7 and safe[2]["bad_index"] == -1
  assert safe[2]["image"][0, 0, 0] == 40  # the .gif
  config = _config(global_batch_size=8)
  config.data.update(source="folder", data_dir=str(tmp_path), random_flip=False)
  it = pipeline.build_train_iterator(config, rows=(0, 8))
  with caplog.at_level("WARNING"):
    batch = next(it)
  assert "bad_index" not in batch and it.bad_images == 3  # f, g, h once each
  assert any("f.png" in r.getMessage() for r in caplog.records)
  np.testing.assert_array_equal(np.sort(batch["image"][:, 0, 0, 0]),
                                [0, 0, 0, 0, 20, 40, 60, 80])  # a for f, g and h (wrapping)
  config.data.max_bad_images = 2
  with pytest.raises(pipeline.TooManyBadImagesError,
                     match=r"3 unreadable.*f\.png.*config\.data\.max_bad_images=2"):
    next(pipeline.build_train_iterator(config, rows=(0, 8)))


def _image_config(source, **train_overrides):
  """The sections an image-trained task reads (data, seed, train), 32 x 32 images."""
  config = _config(**train_overrides)
  config.data.update(source=source, image_size=32)
  return config


def test_image_iterators_synthetic_and_arrays():
  config = _image_config("synthetic", global_batch_size=8, train_examples=16)
  first = next(pipeline.build_image_iterator(config, rows=(0, 8)))
  again = next(pipeline.build_image_iterator(config, rows=(0, 8)))
  np.testing.assert_array_equal(first["image"], again["image"])
  assert first["image"].shape == (8, 32, 32, 3) and first["image"].dtype == np.uint8
  # 4 x 4 flat cells of 8 x 8 pixels, the same image for the same index on any process.
  cells = first["image"][:, ::8, ::8]
  np.testing.assert_array_equal(first["image"], np.repeat(np.repeat(cells, 8, 1), 8, 2))
  source = sources.SyntheticImageSource(16, 32)
  assert {source[i]["image"].tobytes() for i in range(16)} >= {
      im.tobytes() for im in first["image"]}
  # In-memory float images: each epoch is a permutation; rows of two processes make the batch.
  images = (np.arange(32, dtype=np.float32)[:, None, None, None] / 16 - 1) * np.ones(
      (32, 32, 32, 3), np.float32)
  config = _image_config("arrays", global_batch_size=8)
  it = pipeline.build_image_iterator(config, images, rows=(0, 8))
  ids = np.concatenate([next(it)["image"][:, 0, 0, 0] for _ in range(4)]) * 16 + 16
  np.testing.assert_array_equal(np.sort(ids), np.arange(32))
  whole = pipeline.build_image_iterator(config, images, rows=(0, 8))
  left = pipeline.build_image_iterator(config, images, rows=(0, 4))
  right = pipeline.build_image_iterator(config, images, rows=(4, 8))
  for _ in range(5):
    np.testing.assert_array_equal(
        np.concatenate([next(left)["image"], next(right)["image"]]), next(whole)["image"])


def test_image_sources_and_config_reject_bad_input():
  with pytest.raises(ValueError, match=r"images \[N, 32, 32, 3\]"):
    sources.ArrayImageSource(np.zeros((4, 16, 16, 3), np.uint8), 32)
  with pytest.raises(ValueError, match=r"must lie in \[-1, 1\], got \[2.0, 2.0\]"):
    sources.ArrayImageSource(np.full((4, 32, 32, 3), 2.0), 32)
  with pytest.raises(TypeError, match="uint8 or float"):
    sources.ArrayImageSource(np.zeros((4, 32, 32, 3), np.int32), 32)
  with pytest.raises(ValueError, match="divisible by 4"):
    sources.SyntheticImageSource(4, 30)
  config = _image_config("arrays")
  with pytest.raises(ValueError, match=r"'arrays' goes with train\(\.\.\., dataset=images"):
    pipeline.validate_image_data_config(config)
  config = _image_config("synthetic")
  config.data.image_size = 40
  with pytest.raises(ValueError, match="config.data.image_size=40 must be a positive multiple"):
    pipeline.validate_image_data_config(config)
