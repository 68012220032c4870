"""Prompt cleaning of the official T2I/T2V pipeline, applied before tokenization.

  clean_prompt(text) = collapse_whitespace(unescape(unescape(ftfy.fix_text(text))).strip())

ftfy repairs mojibake and broken Unicode ("cafÃ©" -> "café"), HTML entities are unescaped
twice (so "&amp;lt;" becomes "<"), and every run of Unicode white space becomes one space,
with none at either end. Needs the `text` extra (ftfy).
"""

import html
import re

# The Unicode White_Space property (what the official `regex` pattern \s matches). Python's
# `re` \s would also match the four information separators U+001C..U+001F, which the official
# cleaning keeps.
_WHITE_SPACE = re.compile("[\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f"
                          "\u3000]+")


def _import_ftfy():
  try:
    import ftfy  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("prompt cleaning needs ftfy: pip install 'grn_jax[text]'.") from e
  return ftfy


def collapse_whitespace(text: str) -> str:
  """Every run of Unicode white space -> one space; stripped at both ends."""
  return _WHITE_SPACE.sub(" ", text).strip()


def clean_prompt(text: str) -> str:
  """The official prompt cleaning: ftfy, HTML unescape twice, white space collapsed."""
  if not isinstance(text, str):
    raise TypeError(f"a prompt must be a str, got {type(text).__name__}.")
  text = _import_ftfy().fix_text(text)
  text = html.unescape(html.unescape(text)).strip()
  return collapse_whitespace(text)
