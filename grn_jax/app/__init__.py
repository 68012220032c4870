"""A web app to generate and edit with GRN: `python -m grn_jax.app` (see __main__.py)."""
