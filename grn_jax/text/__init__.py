"""Prompt preprocessing for the umT5 text encoder: cleaning, tokenization, length buckets.

  tokenizer = PromptTokenizer.from_config(config.text_encoder)
  ids, mask = tokenizer([t2v_prompt(p) for p in prompts])   # int32 / bool [B, bucket]
  encoder = PromptEncoder.from_config(config.text_encoder)  # + the converted encoder
  features, mask = encoder(prompts)                         # float32 [B, bucket, dim]

Needs the `text` extra (pip install 'grn_jax[text]': ftfy, tokenizers, sentencepiece).
"""

from grn_jax.text.cleaning import clean_prompt, collapse_whitespace
from grn_jax.text.encoder import PromptEncoder, load_text_encoder
from grn_jax.text.prompts import (DEFAULT_NEGATIVE_PROMPT, T2V_NEGATIVE_PROMPT,
                                  T2V_PROMPT_SUFFIX, t2v_prompt)
from grn_jax.text.tokenize import PAD_ID, PromptTokenizer, bucket_length, validate_buckets

__all__ = ["DEFAULT_NEGATIVE_PROMPT", "PAD_ID", "PromptEncoder", "PromptTokenizer",
           "T2V_NEGATIVE_PROMPT", "T2V_PROMPT_SUFFIX", "bucket_length", "clean_prompt",
           "collapse_whitespace", "load_text_encoder", "t2v_prompt", "validate_buckets"]
