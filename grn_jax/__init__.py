"""grn_jax: Generative Refinement Networks (arXiv 2604.13030) in JAX/Flax."""

__version__ = "0.1.0"
