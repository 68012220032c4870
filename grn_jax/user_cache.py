"""The user's grn_jax cache folder and the persistent compilation cache of the command lines.

`cache_dir()` is $GRN_JAX_CACHE, else $XDG_CACHE_HOME/grn_jax, else ~/.cache/grn_jax. It holds
the converted pretrained models (grn_jax/pretrained.py) and the XLA compilation cache.

`enable_compilation_cache()` points `jax_compilation_cache_dir` at cache_dir('xla') so that a
second run of a command reuses the first one's compiled programs (the sampler, the train step).
The command lines (grn_jax.main, grn_jax.pretrained) call it at start-up; library use and the
tests do not (tests/conftest.py sets GRN_JAX_COMPILATION_CACHE=off for the subprocesses they
start). $GRN_JAX_COMPILATION_CACHE: 'off' disables it, a path moves it.
"""

import os

from absl import logging
import jax

CACHE_ENV = "GRN_JAX_CACHE"
COMPILATION_CACHE_ENV = "GRN_JAX_COMPILATION_CACHE"
OFF_VALUES = ("off", "0", "false", "no")


def cache_dir(*parts: str) -> str:
  """The cache folder (see the module docstring), joined with `parts`; not created."""
  root = os.environ.get(CACHE_ENV)
  if not root:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    root = os.path.join(xdg, "grn_jax")
  return os.path.join(os.path.expanduser(root), *parts)


def enable_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache; returns its folder (None when disabled).

  Programs that compile in under a second are not written (jax's default threshold), so the
  cache holds the expensive ones only.
  """
  setting = os.environ.get(COMPILATION_CACHE_ENV, "")
  if setting.lower() in OFF_VALUES:
    return None
  path = os.path.expanduser(setting) if setting else cache_dir("xla")
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  logging.info("persistent compilation cache: %s ($%s=off disables it)", path,
               COMPILATION_CACHE_ENV)
  return path
