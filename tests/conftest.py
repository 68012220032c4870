"""Test set-up: 8 fake CPU devices for sharding tests (must run before jax is imported), and no
persistent compilation cache for the command lines the tests start (grn_jax/user_cache.py)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["GRN_JAX_COMPILATION_CACHE"] = "off"

import pytest  # pylint: disable=g-import-not-at-top


def pytest_collection_modifyitems(config, items):
  import jax  # pylint: disable=g-import-not-at-top
  if jax.default_backend() != "cpu":
    return
  skip = pytest.mark.skip(reason="needs a GPU or TPU")
  for item in items:
    if "accelerator" in item.keywords:
      item.add_marker(skip)
