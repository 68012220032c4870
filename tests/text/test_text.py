"""Prompt cleaning, tokenization (tokenizer.json and the spiece.model fallback), EOS, padding,
truncation and length buckets, with vocabularies built here (the real one cannot be fetched)."""

import io
import sys

import numpy as np
import pytest
import sentencepiece as spm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from configs import umt5 as umt5_configs
from grn_jax import text

# A tiny Unigram vocabulary in the T5 convention: <pad> 0, </s> 1, <unk> 2.
VOCAB = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁a", -2.0), ("▁cat", -2.0),
         ("▁c", -4.0), ("at", -4.0), ("▁", -3.0), ("s", -3.0), ("<", -5.0), (">", -5.0),
         ("b", -5.0), ("é", -5.0), ("▁café", -2.0)]


def write_tokenizer_json(path):
  tok = Tokenizer(models.Unigram(VOCAB, unk_id=2, byte_fallback=False))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
  tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
  tok.enable_truncation(3)  # a file's own settings must not leak into our encoding
  tok.save(str(path))
  return str(path)


def write_spiece_model(path):
  model = io.BytesIO()
  corpus = ["a cat sat on the mat", "the cat ate a rat", "a dog and a cat", "the mat is red"]
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus * 20), model_writer=model, vocab_size=15, model_type="word",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2)
  with open(path, "wb") as f:
    f.write(model.getvalue())
  return str(path)


@pytest.fixture(name="tokenizer_json")
def fixture_tokenizer_json(tmp_path):
  return write_tokenizer_json(tmp_path / "tokenizer.json")


def test_cleaning_repairs_mojibake_unescapes_twice_and_collapses_white_space():
  assert text.clean_prompt("cafÃ© crÃ¨me") == "café crème"
  assert text.clean_prompt("Tom &amp;amp; Jerry &lt;3") == "Tom & Jerry <3"
  assert text.clean_prompt("&amp;lt;b&amp;gt;") == "<b>"
  # ftfy unescapes entities itself unless the text already has a '<'; then exactly twice.
  assert text.clean_prompt("<b>&amp;amp;amp;lt;") == "<b>&amp;lt;"
  assert text.clean_prompt(" a\t\tb\n\u3000c\xa0d\u2009 ") == "a b c d"
  assert text.clean_prompt("x\x1cy") == "xy"  # ftfy drops control characters
  # U+001C is no Unicode White_Space (the official regex \s): not a space (Python's re \s is).
  assert text.collapse_whitespace(" x\x1c \u205f y ") == "x\x1c y"
  assert text.clean_prompt("   ") == ""
  with pytest.raises(TypeError, match="must be a str"):
    text.clean_prompt(None)


def test_missing_extra_names_it(monkeypatch, tokenizer_json):
  monkeypatch.setitem(sys.modules, "ftfy", None)
  with pytest.raises(ImportError, match=r"pip install 'grn_jax\[text\]'"):
    text.clean_prompt("a cat")
  monkeypatch.setitem(sys.modules, "tokenizers", None)
  with pytest.raises(ImportError, match=r"tokenizers package: pip install 'grn_jax\[text\]'"):
    text.PromptTokenizer(tokenizer_json, 8, (8,))


def test_tokenizer_json_ids_eos_padding_and_mask(tokenizer_json):
  tok = text.PromptTokenizer(tokenizer_json, 16, (4, 8, 16))
  assert tok.token_ids(["a cat", "a cats", "a dog", "cafÃ©", "&lt;b&gt;", ""]) == [
      [3, 4, 1],           # ▁a ▁cat </s>
      [3, 4, 8, 1],        # ▁a ▁cat s </s>
      [3, 7, 2, 1],        # ▁a ▁ <unk> </s>  ('dog' is out of vocabulary)
      [13, 1],             # ▁café </s>  (mojibake repaired first)
      [7, 9, 11, 10, 1],   # ▁ < b > </s>  (entities unescaped first)
      [1]]                 # the empty prompt is EOS alone
  ids, mask = tok(["a cat", "  a   cats "])
  np.testing.assert_array_equal(ids, [[3, 4, 1, 0], [3, 4, 8, 1]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 1, 1]])
  assert ids.dtype == np.int32 and mask.dtype == bool


def test_truncation_keeps_max_length_minus_one_tokens_then_eos(tokenizer_json):
  tok = text.PromptTokenizer(tokenizer_json, 6, (6,))
  ids, mask = tok(["a " * 20, "a cat"])
  np.testing.assert_array_equal(ids, [[3, 3, 3, 3, 3, 1], [3, 4, 1, 0, 0, 0]])
  assert mask.sum(1).tolist() == [6, 3]


def test_length_buckets(tokenizer_json):
  tok = text.PromptTokenizer(tokenizer_json, 64, (16, 32, 64))
  assert tok(["a cat"])[0].shape == (1, 16)
  assert tok(["a cat", "a " * 16])[0].shape == (2, 32)      # 17 tokens -> bucket 32
  assert tok(["a " * 15])[0].shape == (1, 16)               # 16 tokens fit bucket 16
  assert tok(["a " * 200])[0].shape == (1, 64)              # truncated to the last bucket
  assert tok(["a cat"], length=40)[0].shape == (1, 40)
  with pytest.raises(ValueError, match="shorter than the longest prompt"):
    tok(["a a a a"], length=3)
  assert text.bucket_length(1, (16, 32)) == 16 and text.bucket_length(17, (16, 32)) == 32
  with pytest.raises(ValueError, match="do not fit the largest length bucket"):
    text.bucket_length(33, (16, 32))
  with pytest.raises(TypeError, match="not a single str"):
    tok("a cat")


@pytest.mark.parametrize("max_length,buckets,message", [
    (64, (16, 32), "must end at max_length=64"),
    (64, (32, 16, 64), "increasing positive lengths"),
    (64, (), "increasing positive lengths"),
    (1, (1,), "max_length must be an integer >= 2")])
def test_bucket_validation_names_the_field(tokenizer_json, max_length, buckets, message):
  with pytest.raises(ValueError, match=message):
    text.PromptTokenizer(tokenizer_json, max_length, buckets)


def test_spiece_fallback_and_folder_lookup(tmp_path, tokenizer_json):
  folder = tmp_path / "only_spiece"
  folder.mkdir()
  spiece = write_spiece_model(folder / "spiece.model")
  tok = text.PromptTokenizer(str(folder), 8, (8,))
  assert tok.path == spiece and tok.eos_id == 1
  sp = spm.SentencePieceProcessor(model_file=spiece)
  pieces = lambda ids: [sp.IdToPiece(i) for i in ids]  # noqa: E731
  ids, mask = tok(["a  cat", "The dog"])
  assert pieces(ids[0][mask[0]]) == ["▁a", "▁cat", "</s>"]
  assert pieces(ids[1][mask[1]]) == ["<unk>", "▁dog", "</s>"]   # 'The' is not in the corpus
  assert ids[0, 3:].tolist() == [0] * 5
  both = tmp_path / "both"
  both.mkdir()
  write_spiece_model(both / "spiece.model")
  write_tokenizer_json(both / "tokenizer.json")
  assert text.PromptTokenizer(str(both), 8, (8,)).path.endswith("tokenizer.json")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="holds neither tokenizer.json nor spiece.model"):
    text.PromptTokenizer(str(empty), 8, (8,))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    text.PromptTokenizer(str(tmp_path / "missing.json"), 8, (8,))
  broken = tmp_path / "broken.json"
  broken.write_text("{not json")
  with pytest.raises(ValueError, match="is not a readable tokenizer.json"):
    text.PromptTokenizer(str(broken), 8, (8,))


def test_vocabulary_without_t5_specials_is_refused(tmp_path):
  path = tmp_path / "tokenizer.json"
  Tokenizer(models.Unigram([("<unk>", 0.0), ("<pad>", 0.0), ("</s>", 0.0)], unk_id=0)).save(
      str(path))
  with pytest.raises(ValueError, match="has <pad> at id 1"):
    text.PromptTokenizer(str(path), 8, (8,))
  Tokenizer(models.Unigram([("<unk>", 0.0), ("x", -1.0)], unk_id=0)).save(str(path))
  with pytest.raises(ValueError, match="has no </s> token"):
    text.PromptTokenizer(str(path), 8, (8,))


def test_from_config_and_the_official_t2v_prompt_strings(tokenizer_json):
  cfg = umt5_configs.get_config("variant=xxl").text_encoder
  assert (cfg.max_length, tuple(cfg.length_buckets)) == (512, (64, 128, 256, 512))
  tiny = umt5_configs.get_config("variant=tiny").text_encoder
  with pytest.raises(ValueError, match="tokenizer_path is empty"):
    text.PromptTokenizer.from_config(tiny)
  tiny.tokenizer_path = tokenizer_json
  assert text.PromptTokenizer.from_config(tiny).length_buckets == tuple(tiny.length_buckets)
  assert text.t2v_prompt("A man") == "A man. masterpiece, high quality."
  negative = text.T2V_NEGATIVE_PROMPT
  assert negative.startswith("ugly, blurry, low-resolution,")
  assert negative.endswith("crowded background, bad composition")
  assert len(negative.split(", ")) == 60 and "  " not in negative
  assert text.DEFAULT_NEGATIVE_PROMPT == ""
