"""flax.linen modules. `build_c2i(config.model)`, `build_t2iv(config.model)`,
`build_tokenizer(config.tokenizer)`, `build_umt5(config.text_encoder)`."""

from grn_jax.models.grn_c2i import GRNC2I, build_c2i, validate_model_config
from grn_jax.models.grn_t2iv import GRNT2IV, build_t2iv


def build_tokenizer(cfg):
  """The HBQ tokenizer module from `config.tokenizer` (see grn_jax/models/tokenizer.py)."""
  from grn_jax.models import tokenizer  # pylint: disable=g-import-not-at-top
  return tokenizer.build_tokenizer(cfg)


def build_umt5(cfg):
  """The umT5 text encoder from an encoder config (see grn_jax/models/umt5.py)."""
  from grn_jax.models import umt5  # pylint: disable=g-import-not-at-top
  return umt5.build_umt5(cfg)


__all__ = ["GRNC2I", "GRNT2IV", "build_c2i", "build_t2iv", "build_tokenizer", "build_umt5",
           "validate_model_config"]
