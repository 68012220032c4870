"""The text path of the demos: a word-level tokenizer file and a frozen random umT5 encoder.

No pretrained text encoder is available offline, so the demos encode their captions with a tiny
umT5 (grn_jax/models/umt5.py, configs/umt5.py's tiny sizes) whose weights are random and never
trained: the features are a fixed function of the words and their order, and prompts that name
different digits still get different features (the token embeddings have std 1 and every layer
adds to them, `separation` measures it). The GRN learns to read them, as it would read the
features of a pretrained encoder.

  path = write_tokenizer(vocabulary(texts), workdir)         # workdir/text_tokenizer.json
  encoder = frozen_encoder(config.text_encoder, path)        # grn_jax.text.PromptEncoder
  features, mask = encode(encoder, prompts, batch_size=256)  # float32 [N, L, dim], bool [N, L]

The tokenizer is a `tokenizers` WordLevel model over the demo's words (`captions.word_tokens`:
lower case, words with inner hyphens, single punctuation marks) with the T5 specials <pad> = 0,
</s> = 1, <unk> = 2, so grn_jax.text.PromptTokenizer reads it like a released tokenizer.json.
"""

import os
from typing import Sequence

import ml_collections
import numpy as np

from grn_jax import text
from grn_jax.demo import captions

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")   # ids 0, 1, 2 (T5's pad and EOS ids)
TOKENIZER_FILE = "text_tokenizer.json"


def write_tokenizer(words: Sequence[str], directory: str) -> str:
  """Writes directory/text_tokenizer.json, a word-level tokenizer of `words`; returns its path."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  words = list(words)
  if len(set(words)) != len(words) or set(words) & set(SPECIAL_TOKENS):
    raise ValueError("the vocabulary must be distinct words without the special tokens "
                     f"{SPECIAL_TOKENS}.")
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(words))}
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
  tokenizer.normalizer = tokenizers.normalizers.Lowercase()
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.WhitespaceSplit(),
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(captions.WORD_PATTERN),
                                      behavior="isolated")])
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, TOKENIZER_FILE)
  tokenizer.save(path)
  return path


def encoder_config(text_encoder: ml_collections.ConfigDict, tokenizer_path: str
                   ) -> ml_collections.ConfigDict:
  """config.text_encoder with the demo's tokenizer file and random weights: the section the
  demo's samplers (`--mode=t2i|t2v|i2v`) load the same frozen encoder from."""
  cfg = ml_collections.ConfigDict(text_encoder.to_dict())
  cfg.update(tokenizer_path=tokenizer_path, random_init=True, checkpoint="")
  return cfg


def frozen_encoder(text_encoder: ml_collections.ConfigDict, tokenizer_path: str
                   ) -> text.PromptEncoder:
  """A PromptEncoder with the random umT5 weights of grn_jax.text.load_text_encoder
  (random_init: always key 0, so every stage and the samplers get the same encoder) and the
  demo's tokenizer.

  Raises:
    ValueError: the tokenizer has more words than text_encoder.vocab_size.
  """
  cfg = encoder_config(text_encoder, tokenizer_path)
  tokenizer = text.PromptTokenizer.from_config(cfg)
  words = tokenizer.backend.tokenizer.get_vocab_size()
  if words > cfg.vocab_size:
    raise ValueError(f"the demo's tokenizer has {words} tokens, more than "
                     f"config.text_encoder.vocab_size={cfg.vocab_size}; raise it.")
  return text.PromptEncoder.from_config(cfg)


def encode(encoder: text.PromptEncoder, prompts: Sequence[str], batch_size: int = 256,
           length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Features of every prompt, padded to one length (one compiled encoder).

  Args:
    encoder: the frozen encoder.
    prompts: N prompt strings.
    batch_size: prompts per encoder call (the last batch is padded with repeats).
    length: the padded length; default the length bucket of the longest prompt.

  Returns:
    (features float32 [N, L, dim], zero past each prompt; mask bool [N, L]).
  """
  prompts = list(prompts)
  if not prompts:
    raise ValueError("encode() needs at least one prompt.")
  if length is None:
    longest = max(len(ids) for ids in encoder.tokenizer.token_ids(prompts))
    length = text.bucket_length(longest, encoder.tokenizer.length_buckets)
  padded = prompts + [prompts[-1]] * ((-len(prompts)) % batch_size)
  features, masks = [], []
  for start in range(0, len(padded), batch_size):
    out, mask = encoder(padded[start:start + batch_size], length)
    features.append(np.asarray(out) * mask[..., None])
    masks.append(mask)
  n = len(prompts)
  return np.concatenate(features)[:n].astype(np.float32), np.concatenate(masks)[:n]


def pooled(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Mean of the valid rows: float [N, L, dim], bool [N, L] -> float64 [N, dim]."""
  mask = np.asarray(mask, np.float64)
  return (np.asarray(features, np.float64) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


def separation(features: np.ndarray, mask: np.ndarray, digits: np.ndarray,
               phrasings: np.ndarray) -> dict[str, float]:
  """How far apart the features of prompts naming different digits are.

  Args:
    features, mask: float [N, L, dim], bool [N, L] (`encode`).
    digits: int [N] the digit each prompt names.
    phrasings: int [N] the phrasing (template and attributes) of each prompt.

  Returns:
    min_digit_distance: over phrasings, over pairs of prompts of that phrasing naming
      different digits, the smallest distance of their pooled features, divided by the mean
      pooled-feature norm (0 would mean that two digits' prompts are indistinguishable);
    mean_digit_distance: the same, averaged over the pairs;
    nearest_digit_accuracy: each prompt's digit read off the nearest pooled feature among the
      prompts of OTHER phrasings (how much the digit word alone places a prompt).
  """
  vectors = pooled(features, mask)
  digits, phrasings = np.asarray(digits), np.asarray(phrasings)
  scale = float(np.linalg.norm(vectors, axis=1).mean())
  distances = []
  for phrasing in np.unique(phrasings):
    rows = np.flatnonzero(phrasings == phrasing)
    for i, a in enumerate(rows):
      for b in rows[i + 1:]:
        if digits[a] != digits[b]:
          distances.append(np.linalg.norm(vectors[a] - vectors[b]))
  pair = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
  pair[phrasings[:, None] == phrasings[None]] = np.inf
  nearest = digits[np.argmin(pair, axis=1)]
  return dict(min_digit_distance=float(np.min(distances)) / scale,
              mean_digit_distance=float(np.mean(distances)) / scale,
              nearest_digit_accuracy=float(np.mean(nearest == digits)))
