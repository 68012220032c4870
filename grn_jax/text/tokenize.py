"""Prompt tokenization for the umT5 encoder: cleaned text -> padded ids and mask per bucket.

As the official pipeline: every prompt is cleaned (`clean_prompt`), tokenized without special
tokens, cut to `max_length - 1` tokens and closed with EOS (`</s>`), so that no prompt is longer
than `max_length` (512 in the pipeline); padding uses id 0 (`<pad>`) with mask 0. Where the
official pipeline pads every prompt to 512, a batch here is padded to the smallest of
`length_buckets` that holds its longest prompt: the encoder then compiles once per bucket and
the outputs of the valid tokens are the same (the encoder masks padded keys).

The vocabulary comes from a released `tokenizer.json` (the `tokenizers` library) or, where
only that exists, a sentencepiece `spiece.model`. Needs the `text` extra. The path `bytes`
selects a vocabulary of UTF-8 bytes (id 3 + byte; <pad> 0, </s> 1, <unk> 2) for random-weight
test models, which have no released vocabulary (never for a trained encoder).
"""

import os
from typing import Sequence

import numpy as np

from grn_jax.text.cleaning import clean_prompt

PAD_ID = 0
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
BYTE_VOCABULARY = "bytes"  # tokenizer_path of the byte vocabulary (test models only)


def _require(module: str, purpose: str):
  try:
    return __import__(module)
  except ImportError as e:
    raise ImportError(f"{purpose} needs the {module} package: pip install 'grn_jax[text]'.") from e


def validate_buckets(max_length: int, length_buckets: Sequence[int]) -> tuple[int, ...]:
  """Checks the prompt fields; returns the buckets as a tuple."""
  if not isinstance(max_length, (int, np.integer)) or max_length < 2:
    raise ValueError(f"text_encoder.max_length must be an integer >= 2 (EOS included), got "
                     f"{max_length!r}.")
  buckets = tuple(int(b) for b in length_buckets)
  if not buckets or any(b <= 0 for b in buckets) or list(buckets) != sorted(set(buckets)):
    raise ValueError(f"text_encoder.length_buckets must be increasing positive lengths, got "
                     f"{tuple(length_buckets)!r}.")
  if buckets[-1] != max_length:
    raise ValueError(f"text_encoder.length_buckets must end at max_length={max_length} (every "
                     f"prompt has to fit a bucket), got {buckets!r}.")
  return buckets


def bucket_length(num_tokens: int, length_buckets: Sequence[int]) -> int:
  """The smallest bucket >= num_tokens (num_tokens never exceeds the last bucket)."""
  for bucket in length_buckets:
    if num_tokens <= bucket:
      return int(bucket)
  raise ValueError(f"{num_tokens} tokens do not fit the largest length bucket "
                   f"{length_buckets[-1]}.")


class _HFTokenizer:
  """A `tokenizers` tokenizer.json, without its own truncation, padding or special tokens."""

  def __init__(self, path: str):
    tokenizers = _require("tokenizers", "reading tokenizer.json")
    try:
      self.tokenizer = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # the Rust side raises a plain Exception for unreadable files.
      raise ValueError(f"{path!r} is not a readable tokenizer.json ({e}).") from e
    self.tokenizer.no_truncation()
    self.tokenizer.no_padding()

  def token_id(self, token: str) -> int | None:
    return self.tokenizer.token_to_id(token)

  def encode(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]


class _SentencePiece:
  """A sentencepiece model (the fallback where only spiece.model exists)."""

  def __init__(self, path: str):
    spm = _require("sentencepiece", "reading spiece.model")
    self.processor = spm.SentencePieceProcessor()
    try:
      self.processor.Load(path)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"{path!r} is not a readable sentencepiece model ({e}).") from e

  def token_id(self, token: str) -> int | None:
    token_id = self.processor.PieceToId(token)
    return None if token_id == self.processor.unk_id() and token != "<unk>" else token_id

  def encode(self, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in self.processor.Encode(texts, out_type=int)]


class _Bytes:
  """UTF-8 bytes as tokens: id 3 + byte, after the T5 specials <pad> 0, </s> 1, <unk> 2."""

  def token_id(self, token: str) -> int | None:
    return {PAD_TOKEN: PAD_ID, EOS_TOKEN: 1}.get(token)

  def encode(self, texts: list[str]) -> list[list[int]]:
    return [[3 + b for b in text.encode("utf-8")] for text in texts]


def _find_file(path: str) -> str:
  if os.path.isdir(path):
    for name in TOKENIZER_FILES:
      if os.path.isfile(os.path.join(path, name)):
        return os.path.join(path, name)
    raise FileNotFoundError(f"{path!r} holds neither {' nor '.join(TOKENIZER_FILES)}; point "
                            "text_encoder.tokenizer_path at the tokenizer folder of the "
                            "converted encoder (python -m grn_jax.convert --kind=umt5).")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tokenizer file {path!r} does not exist.")
  return path


class PromptTokenizer:
  """Cleaned, truncated, EOS-closed prompts padded to a length bucket.

  `tokenizer(prompts)` -> (ids int32 [B, L], mask bool [B, L]); L is the smallest bucket that
  holds the longest prompt (or `length`, when given).
  """

  def __init__(self, path: str, max_length: int, length_buckets: Sequence[int]):
    """Reads `path`: a tokenizer.json, a spiece.model, or a folder holding one of them
    (tokenizer.json preferred)."""
    self.length_buckets = validate_buckets(max_length, length_buckets)
    self.max_length = int(max_length)
    self.path = path if path == BYTE_VOCABULARY else _find_file(path)
    if self.path == BYTE_VOCABULARY:
      self.backend = _Bytes()
    elif self.path.endswith(".model"):
      self.backend = _SentencePiece(self.path)
    else:
      self.backend = _HFTokenizer(self.path)
    eos_id = self.backend.token_id(EOS_TOKEN)
    if eos_id is None:
      raise ValueError(f"{self.path!r} has no {EOS_TOKEN} token; it is not a T5 vocabulary.")
    pad_id = self.backend.token_id(PAD_TOKEN)
    if pad_id not in (None, PAD_ID):
      raise ValueError(f"{self.path!r} has {PAD_TOKEN} at id {pad_id}; the umT5 encoder pads "
                       f"with id {PAD_ID}.")
    self.eos_id = int(eos_id)

  @classmethod
  def from_config(cls, cfg) -> "PromptTokenizer":
    """From the `text_encoder` section (tokenizer_path, max_length, length_buckets)."""
    if not cfg.tokenizer_path:
      raise ValueError("text_encoder.tokenizer_path is empty; set it to the tokenizer folder of "
                       "the converted encoder (or a tokenizer.json / spiece.model file).")
    return cls(cfg.tokenizer_path, cfg.max_length, cfg.length_buckets)

  def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
    """Per prompt: ids of the cleaned text, at most max_length - 1 of them, then EOS."""
    if isinstance(prompts, str):
      raise TypeError("pass a sequence of prompts, e.g. [prompt], not a single str.")
    texts = [clean_prompt(p) for p in prompts]
    return [ids[:self.max_length - 1] + [self.eos_id] for ids in self.backend.encode(texts)]

  def num_tokens(self, prompts: Sequence[str]) -> list[int]:
    """Per prompt: its tokens before truncation, EOS included (> max_length: it gets cut)."""
    return [len(ids) + 1 for ids in self.backend.encode([clean_prompt(p) for p in prompts])]

  def __call__(self, prompts: Sequence[str],
               length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids int32 [B, L] (pad 0) and mask bool [B, L] (True for the prompt and its EOS).

    Args:
      prompts: B prompt strings.
      length: the padded length L; default the smallest length bucket that holds them all.
    """
    token_ids = self.token_ids(prompts)
    longest = max((len(ids) for ids in token_ids), default=1)
    if length is None:
      length = bucket_length(longest, self.length_buckets)
    elif length < longest:
      raise ValueError(f"length={length} is shorter than the longest prompt ({longest} tokens "
                       "with EOS).")
    ids = np.full((len(token_ids), length), PAD_ID, np.int32)
    mask = np.zeros((len(token_ids), length), bool)
    for row, row_ids in enumerate(token_ids):
      ids[row, :len(row_ids)] = row_ids
      mask[row, :len(row_ids)] = True
    return ids, mask
