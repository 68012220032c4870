"""The two names grn_jax/trainers/c2i.py imports from here; everything lives in sampling/c2i.py.

Delete this module once the trainer imports `grn_jax.sampling.c2i` (SAMPLE_FIELDS for its
config check, sample_grid_fn for its periodic sampling hook).
"""

from grn_jax.sampling.c2i import SAMPLE_FIELDS, sample_grid_fn

__all__ = ["SAMPLE_FIELDS", "sample_grid_fn"]
