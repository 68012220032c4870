"""The user cache folder and the persistent compilation cache of the command lines."""

import os
import pathlib
import subprocess
import sys
import textwrap

from grn_jax import user_cache

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_cache_dir_precedence(monkeypatch, tmp_path):
  monkeypatch.delenv(user_cache.CACHE_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert user_cache.cache_dir("xla") == str(tmp_path / "xdg" / "grn_jax" / "xla")
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert user_cache.cache_dir() == str(tmp_path / "home" / ".cache" / "grn_jax")
  monkeypatch.setenv(user_cache.CACHE_ENV, str(tmp_path / "mine"))
  assert user_cache.cache_dir("pretrained", "x") == str(tmp_path / "mine" / "pretrained" / "x")


def test_tests_run_without_it():
  # conftest.py turns it off for every command line a test starts.
  assert user_cache.enable_compilation_cache() is None


def test_a_second_process_reuses_the_compiled_program(tmp_path):
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp
      from grn_jax import user_cache
      jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
      print(user_cache.enable_compilation_cache())
      print(float(jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.float32(0.5))))
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", user_cache.CACHE_ENV: str(tmp_path)}
  del env[user_cache.COMPILATION_CACHE_ENV]
  run = lambda: subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300,
                               check=True).stdout.split()
  first = run()
  assert first[0] == str(tmp_path / "xla")
  entries = sorted(os.listdir(tmp_path / "xla"))
  assert entries  # the first run wrote its programs
  assert run() == first
  assert sorted(os.listdir(tmp_path / "xla")) == entries  # the second found them: nothing new
