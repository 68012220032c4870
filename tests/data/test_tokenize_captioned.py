"""Preparing captioned images and videos: caption files, media decoding and buckets, the shards
(labels equal the tokenizer's, features the encoder's), skipped items counted, resume, and the
packed training stream over the shards."""

import json

import numpy as np
from PIL import Image
import pytest

from configs import t2iv as t2iv_configs
from grn_jax import tokenizer_io
from grn_jax.data import captioned
from grn_jax.data import captioned_media
from grn_jax.data import captioned_shards
from grn_jax.data import packing
from grn_jax.data import tokenize_captioned


def _write_media(root):
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (30, 40, 3), np.uint8)).save(root / "wide.png")
  Image.fromarray(rng.integers(0, 255, (48, 48, 3), np.uint8)).save(root / "square.png")
  (root / "clip").mkdir()
  for i in range(11):   # 11 frames at 16 fps = 0.625 s -> the 0.5 s bucket: 9 frames
    Image.fromarray(np.full((36, 64, 3), 20 * i, np.uint8)).save(root / "clip" / f"{i:03d}.png")
  frames = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(2)]
  frames[0].save(root / "short.gif", save_all=True, append_images=frames[1:], duration=100)
  (root / "broken.png").write_bytes(b"not a png")
  # Short captions: given (square.png), cut after a seeded number of sentences (wide.png; its
  # seed, the item's index 0, keeps 7 of 8), none (the clip's single sentence).
  rows = [("wide.png", "A wide picture. Of noise. In colour. At random. Small. Odd. Flat. Still."),
          ("square.png", "a square one", "square"),
          ("clip", "a clip getting brighter"), ("short.gif", "a gif"), ("broken.png", "broken"),
          ("missing.png", "gone"), ("square.png", "  ")]
  with open(root / "captions.jsonl", "w") as f:
    for media, caption, *short in rows:
      f.write(json.dumps({"media": media, "caption": caption, **(
          {"short_caption": short[0]} if short else {})}) + "\n")


def _fake_media(frames):
  """Deterministic stand-in for the tokenizer (stride 16, temporal 4, D = 16 bits)."""
  return np.repeat(frames[::4, ::16, ::16, :1] > 127, 16, axis=-1).astype(np.uint8)


def test_media_encoder_gives_bits_of_images_and_videos():
  config = t2iv_configs.get_config("variant=tiny,task=t2v")
  config.tokenizer.random_init = True
  module, params = tokenizer_io.load_tokenizer(config.tokenizer)
  encode = tokenize_captioned.make_media_encoder(module, params, config.model.hbq_rounds)
  video = np.random.default_rng(0).integers(0, 255, (5, 16, 32, 3), np.uint8)
  clip, image = encode(video), encode(video[:1])
  assert clip.shape == (2, 1, 2, 16) and image.shape == (1, 1, 2, 16)
  assert clip.dtype == image.dtype == np.uint8 and set(np.unique(clip)) == {0, 1}
  # The causal video tokenizer encodes frame 0 alone: a clip's first latent frame is its image.
  np.testing.assert_array_equal(clip[0], image[0])


def _fake_prompts(prompts):
  """Deterministic stand-in for umT5: 1 + words tokens of dim 32, seeded by the text."""
  return [np.random.default_rng(sum(map(ord, p))).standard_normal((1 + len(p.split()), 32))
          .astype(np.float32) for p in prompts]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("media")
  _write_media(root)
  config = t2iv_configs.get_config("variant=tiny,task=t2v")
  encode = _fake_media
  reader = captioned_media.CaptionFileReader(str(root / "captions.jsonl"), str(root))
  items = reader.items
  plan = tokenize_captioned.Plan(captions="captions.jsonl", num_items=len(items),
                                 examples_per_shard=3, pixels=config.data.pixels,
                                 max_duration=config.data.max_duration, tokenizer="random",
                                 text_encoder="fake")
  out = str(root / "out")
  summary = tokenize_captioned.prepare(reader, out, data=config.data, encode_media=encode,
                                       prompt_features=_fake_prompts, plan=plan)
  return dict(root=root, config=config, encode=encode, items=items, plan=plan, out=out,
              summary=summary, reader=reader)


def test_shards_hold_the_tokenizer_labels_and_the_prompt_features(prepared):
  summary, config = prepared["summary"], prepared["config"]
  assert summary["written"] == 3 and summary["shards_written"] == [0, 1, 2]
  assert summary["short_captions"] == 2
  reasons = dict(summary["skipped"])
  assert len(summary["skipped"]) == 4
  assert "shorter than one duration step" in reasons[str(prepared["root"] / "short.gif")]
  assert "cannot decode" in reasons[str(prepared["root"] / "broken.png")]
  assert "does not exist" in reasons[str(prepared["root"] / "missing.png")]
  assert "empty caption" in reasons[str(prepared["root"] / "square.png")]
  source = captioned_shards.CaptionedShardSource(prepared["out"])
  assert len(source) == 3 and len(source.skipped) == 4
  np.testing.assert_allclose(source.null_features, _fake_prompts([""])[0])
  for i, item in enumerate(prepared["items"][:3]):
    frames, h_div_w = captioned_media.bucket_media(*captioned_media.load_media(item),
                                                   config.data)
    got = source[i]
    assert got["caption"] == item.caption and got["h_div_w"] == pytest.approx(h_div_w)
    np.testing.assert_array_equal(got["labels"], prepared["encode"](frames))
    np.testing.assert_allclose(got["features"], _fake_prompts([item.caption])[0], rtol=1e-2,
                               atol=1e-2)  # bfloat16
    short = {0: "A wide picture. Of noise. In colour. At random. Small. Odd. Flat.",
             1: "square"}.get(i)
    assert (short or "") == captioned_media.short_variant(item.caption, item.short_caption, i)
    if short is None:
      assert "short_features" not in got
    else:
      np.testing.assert_allclose(got["short_features"], _fake_prompts([short])[0], rtol=1e-2,
                                 atol=1e-2)
  # Buckets: 30 x 40 -> the 3:4 template at 0.06M; the 11-frame clip -> 9 frames, 3 latent.
  assert source[0]["labels"].shape[0] == 1 and source[2]["labels"].shape[0] == 3
  assert captioned_media.bucket_media(np.zeros((1, 30, 40, 3), np.uint8), 0,
                                      config.data)[0].shape == (1, 224, 288, 3)
  visual, text = source.lengths()
  np.testing.assert_array_equal(visual, [packing.visual_length(source[i]["labels"].shape)
                                         for i in range(3)])
  np.testing.assert_array_equal(text, [len(source[i]["features"]) for i in range(3)])  # longer


def test_rerun_resumes_and_a_changed_plan_or_too_many_skips_fail(prepared):
  again = tokenize_captioned.prepare(prepared["reader"], prepared["out"],
                                     data=prepared["config"].data, encode_media=None,
                                     prompt_features=_fake_prompts, plan=prepared["plan"])
  assert again["shards_already_done"] == [0, 1, 2] and again["written"] == 0
  other = tokenize_captioned.Plan(**{**prepared["plan"].__dict__, "pixels": "0.25M"})
  with pytest.raises(ValueError, match="prepared with other settings .*pixels"):
    tokenize_captioned.prepare(prepared["reader"], prepared["out"], data=prepared["config"].data,
                               encode_media=None, prompt_features=_fake_prompts, plan=other)
  tail = captioned_media.CaptionFileReader(str(prepared["root"] / "captions.jsonl"),
                                          str(prepared["root"]))
  tail.items = tail.items[3:]
  with pytest.raises(tokenize_captioned.TooManySkipped, match="--max_skipped=1"):
    tokenize_captioned.prepare(tail, str(prepared["root"] / "out2"),
                               data=prepared["config"].data, encode_media=prepared["encode"],
                               prompt_features=_fake_prompts, max_skipped=1,
                               plan=tokenize_captioned.Plan(**{**prepared["plan"].__dict__,
                                                               "num_items": 4}))


def test_packed_stream_over_the_shards(prepared):
  source = captioned_shards.CaptionedShardSource(prepared["out"])
  visual, _ = source.lengths()
  spec = packing.PackingSpec(visual_tokens=int(visual.max()) * 2, text_tokens=16, max_samples=2)
  it = captioned.make_packed_iterator(source, spec, seed=0, global_batch=2, drop_prob=0.0)
  batch = next(it)
  assert batch["labels"].shape == (2, spec.visual_tokens, source.label_dim)
  assert sorted(np.unique(batch["visual_ids"])) in ([0, 1], [0, 1, 2])


def test_bad_caption_files_name_the_line(tmp_path):
  (tmp_path / "c.jsonl").write_text('{"media": "a.png"}\n')
  with pytest.raises(ValueError, match=r"c.jsonl:1 needs the fields 'media' and 'caption'"):
    captioned_media.read_captions(str(tmp_path / "c.jsonl"), str(tmp_path))
  (tmp_path / "c.csv").write_text("media,caption\na.png,a cat\n")
  assert captioned_media.read_captions(str(tmp_path / "c.csv"), str(tmp_path))[0].caption == "a cat"
  (tmp_path / "c.txt").write_text("a.png a cat\n")
  with pytest.raises(ValueError, match="must end in .jsonl or .csv"):
    captioned_media.read_captions(str(tmp_path / "c.txt"), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    captioned_media.read_captions(str(tmp_path / "none.jsonl"), str(tmp_path))


def test_tfds_reader_takes_the_media_and_first_caption(prepared):
  rng = np.random.default_rng(0)
  elements = [{"image": rng.integers(0, 255, (20, 30, 3), np.uint8),
               "captions": {"text": np.array([b"two dogs", b"dogs"], object)}},
              {"image": rng.integers(0, 255, (5, 20, 30, 3), np.uint8),
               "captions": {"text": np.array([], object)}},
              {"image": np.zeros((20, 30, 2), np.uint8), "captions": {"text": [b"odd"]}}]
  reader = captioned_media.TfdsCaptionReader(elements, "toy", "train", "image", "captions/text")
  frames, fps, caption, short, ident = reader.read(0)
  assert frames.shape == (1, 20, 30, 3) and caption == "two dogs" and ident == "tfds:toy/train[0]"
  assert short == "" and fps == 0.0
  assert reader.read(1).frames.shape == (5, 20, 30, 3) and reader.read(1).caption == ""
  elements[0]["short"] = b"dogs"
  assert captioned_media.TfdsCaptionReader(elements, "toy", "train", "image", "captions/text",
                                           "short").read(0).short_caption == "dogs"
  with pytest.raises(KeyError, match="no feature 'short'.*--short_caption_key"):
    captioned_media.TfdsCaptionReader(elements, "toy", "train", "image", "captions/text",
                                      "short").read(1)
  with pytest.raises(captioned_media.SkipItem, match="not an RGB uint8 image"):
    reader.read(2)
  with pytest.raises(KeyError, match="no feature 'caption'.*--caption_key"):
    captioned_media.TfdsCaptionReader(elements, "toy", "train", "image", "caption").read(0)
  # Through the preparation: the empty caption and the 2-channel image are skipped.
  plan = tokenize_captioned.Plan(**{**prepared["plan"].__dict__, "num_items": 3,
                                    "captions": reader.description})
  summary = tokenize_captioned.prepare(reader, str(prepared["root"] / "tfds_out"),
                                       data=prepared["config"].data, encode_media=_fake_media,
                                       prompt_features=_fake_prompts, plan=plan)
  assert summary["written"] == 1 and len(summary["skipped"]) == 2
