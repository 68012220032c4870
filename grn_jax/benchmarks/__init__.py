"""Printable speed and memory tables: python -m grn_jax.benchmarks[.module]."""
