"""tokenize_dataset: folder -> label shards, unreadable images, resume, multi-process split."""

import os

import jax
import numpy as np
from PIL import Image
import pytest

from configs import c2i
from grn_jax import hbq
from grn_jax.data import images as images_lib
from grn_jax.data import label_shards
from grn_jax.data import tokenize_dataset as td
from grn_jax.models import build_tokenizer

IMAGE_SIZE = 32
BATCH = 8


def _make_folder(root, per_class=(5, 4)):
  """Class folders b/ and a/ (index = sorted name), random PNGs, one corrupt, one truncated."""
  rng = np.random.default_rng(0)
  expected = []  # (path, class index, uint8 image)
  for cls, (name, n) in enumerate(zip(("a", "b"), per_class)):
    os.makedirs(root / name)
    for i in range(n):
      img = rng.integers(0, 256, (40 + 3 * i, 50, 3), dtype=np.uint8)
      path = root / name / f"{i:02d}.png"
      Image.fromarray(img).save(path)
      expected.append((str(path), cls, img))
  (root / "a" / "zz_corrupt.png").write_bytes(b"not an image at all")
  good = (root / "b" / "00.png").read_bytes()
  (root / "b" / "zz_truncated.png").write_bytes(good[:len(good) // 2])
  (root / "b" / "notes.txt").write_text("ignored")
  return expected


def random_params(module, seed=0):
  """PyTorch-style random tokenizer params from shapes alone (module.init compiles slowly)."""
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jax.numpy.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), method="encode"))
  rng = np.random.default_rng(seed)

  def fill(tree):
    out = {}
    fan_in = int(np.prod(tree["kernel"].shape[:-1])) if "kernel" in tree else 1
    for name, value in tree.items():
      if isinstance(value, dict):
        out[name] = fill(value)
      elif name in ("kernel", "bias"):
        bound = 1 / np.sqrt(fan_in)
        out[name] = rng.uniform(-bound, bound, value.shape).astype(np.float32)
      else:
        out[name] = np.ones(value.shape, np.float32)
    return out

  return fill(shapes["params"])


@pytest.fixture(scope="module")
def tokenizer():
  config = c2i.get_config("variant=tiny")
  module = build_tokenizer(config.tokenizer)
  params = random_params(module)
  encoder = td.make_encoder(module, config.model.hbq_rounds, True, BATCH)
  return config, module, params, encoder


def _run(reader, out, tokenizer, **kw):
  config, _, params, encoder = tokenizer
  args = dict(image_size=IMAGE_SIZE, hbq_rounds=config.model.hbq_rounds,
              latent_dim=config.tokenizer.latent_dim, store_latents=True, examples_per_shard=4,
              batch_size=BATCH, tokenizer_desc="random", num_threads=2)
  args.update(kw)
  return td.tokenize_to_shards(reader, str(out), encoder, params, **args)


def test_assign_shards_covers_each_shard_once():
  for num_shards in (1, 2, 7, 16):
    for count in (1, 2, 3, 5):
      blocks = [list(td.assign_shards(num_shards, p, count)) for p in range(count)]
      assert sorted(sum(blocks, [])) == list(range(num_shards))
      sizes = [len(b) for b in blocks]
      assert max(sizes) - min(sizes) <= 1
  assert list(td.assign_shards(5, 0, 2)) == [0, 1]
  assert list(td.assign_shards(5, 1, 2)) == [2, 3, 4]
  assert td.shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
  with pytest.raises(ValueError):
    td.assign_shards(4, 2, 2)


def test_folder_to_shards_values_and_skips(tmp_path, tokenizer):
  config, module, params, _ = tokenizer
  expected = _make_folder(tmp_path / "imgs")
  reader = td.FolderReader(str(tmp_path / "imgs"))
  assert reader.class_names == ["a", "b"] and len(reader) == 11
  summary = _run(reader, tmp_path / "out", tokenizer)
  assert summary["written"] == 9
  skipped = dict(summary["skipped"])
  assert set(os.path.basename(p) for p in skipped) == {"zz_corrupt.png", "zz_truncated.png"}
  td.write_dataset_summary(str(tmp_path / "out"), reader.class_names)

  src = label_shards.LabelShardSource(str(tmp_path / "out"))
  assert len(src) == 9 and src.shape == (2, 2, config.tokenizer.latent_dim)
  assert len(src.skipped) == 2
  # Reference: crop + encode each image alone, outside the batched jitted path.
  crops = np.stack([images_lib.center_crop_adm(img, IMAGE_SIZE) for _, _, img in expected])
  latent = jax.jit(lambda x: module.apply({"params": params}, x, method="encode"))(
      crops / 127.5 - 1.0)
  labels = np.asarray(hbq.quantize(latent, config.model.hbq_rounds, "ind"))
  for i, (_, cls, _) in enumerate(expected):
    item = src[i]
    assert int(item["class_label"]) == cls
    np.testing.assert_allclose(item["latent"], latent[i], atol=2e-3)
    # Labels equal up to latents sitting on a bin edge (float noise between the two paths).
    assert np.mean(item["labels"] == labels[i]) > 0.95


def test_resume_skips_complete_shards_and_redoes_the_rest(tmp_path, tokenizer):
  _make_folder(tmp_path / "imgs")
  reader = td.FolderReader(str(tmp_path / "imgs"))
  out = tmp_path / "out"
  _run(reader, out, tokenizer)
  names = [label_shards.shard_filename(i, 3) for i in range(3)]
  before = {n: open(out / n, "rb").read() for n in names}
  stamp0 = os.stat(out / names[0]).st_mtime_ns
  # Simulate a kill: shard 1 lost its metadata (written last), shard 2 is a stale temp only.
  os.remove(label_shards.metadata_path(str(out / names[1])))
  os.rename(out / names[2], out / (names[2] + ".tmp-123"))
  os.remove(label_shards.metadata_path(str(out / names[2])))
  with pytest.raises(label_shards.ShardFormatError):
    label_shards.LabelShardSource(str(out))
  summary = _run(reader, out, tokenizer)
  assert summary["shards_already_done"] == [0]
  assert summary["shards_written"] == [1, 2]
  assert os.stat(out / names[0]).st_mtime_ns == stamp0
  assert not any(".tmp-" in n for n in os.listdir(out))
  for n in names:
    assert open(out / n, "rb").read() == before[n]
  assert len(label_shards.LabelShardSource(str(out))) == 9
  # A rerun with other settings refuses to mix shards.
  with pytest.raises(ValueError, match="prepared with other settings"):
    _run(reader, out, tokenizer, examples_per_shard=5)


def test_two_processes_write_disjoint_halves(tmp_path, tokenizer):
  _make_folder(tmp_path / "imgs")
  reader = td.FolderReader(str(tmp_path / "imgs"))
  single = _run(reader, tmp_path / "one", tokenizer, store_latents=False)
  s0 = _run(reader, tmp_path / "two", tokenizer, store_latents=False, process_index=0,
            process_count=2)
  with pytest.raises(RuntimeError, match="not complete"):
    td.write_dataset_summary(str(tmp_path / "two"))
  s1 = _run(reader, tmp_path / "two", tokenizer, store_latents=False, process_index=1,
            process_count=2)
  assert s0["shards_written"] == [0] and s1["shards_written"] == [1, 2]
  assert s0["written"] + s1["written"] == single["written"] == 9
  total = td.write_dataset_summary(str(tmp_path / "two"))
  assert total["num_examples_written"] == 9 and total["num_skipped"] == 2
  one = label_shards.LabelShardSource(str(tmp_path / "one"))
  two = label_shards.LabelShardSource(str(tmp_path / "two"))
  for i in range(9):
    np.testing.assert_array_equal(one[i]["labels"], two[i]["labels"])
    assert "latent" not in two[i]


def test_tfds_reader_skips_failing_elements():
  rng = np.random.default_rng(1)

  class FakeSource:
    def __len__(self):
      return 3

    def __getitem__(self, i):
      if i == 1:
        raise ValueError("corrupt JPEG data")
      return dict(image=rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), label=7,
                  file_name=b"n0_%d.JPEG" % i)

  reader = td.TfdsReader(FakeSource(), "fake", "train")
  image, label, ident, reason = reader.load(0)
  assert image.shape == (20, 30, 3) and label == 7 and "n0_0.JPEG" in ident and not reason
  image, _, ident, reason = reader.load(1)
  assert image is None and "corrupt JPEG" in reason and "fake/train[1]" in ident
