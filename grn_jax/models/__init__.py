"""flax.linen modules. `build_c2i(config.model)`, `build_t2iv(config.model)`,
`build_tokenizer(config.tokenizer)`."""

from grn_jax.models.grn_c2i import GRNC2I, build_c2i, validate_model_config
from grn_jax.models.grn_t2iv import GRNT2IV, build_t2iv


def build_tokenizer(cfg):
  """The HBQ tokenizer module from `config.tokenizer` (see grn_jax/models/tokenizer.py)."""
  from grn_jax.models import tokenizer  # pylint: disable=g-import-not-at-top
  return tokenizer.build_tokenizer(cfg)


__all__ = ["GRNC2I", "GRNT2IV", "build_c2i", "build_t2iv", "build_tokenizer",
           "validate_model_config"]
