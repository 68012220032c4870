"""Test set-up: 8 fake CPU devices for sharding tests (must run before jax is imported), and no
persistent compilation cache for the command lines the tests start (grn_jax/user_cache.py)."""

import os

# XLA's cheap CPU backend (as grn_jax/random_init.py uses for init programs): the tests' programs
# are tiny, and full LLVM optimisation was most of their CPU time; what they compute is the same
# to float rounding. Command lines that the tests start get them from the `cheap_xla_flags`
# fixture (on one device unless they add the device count).
CHEAP_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {CHEAP_XLA_FLAGS}")
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


@pytest.fixture
def offline_hub(monkeypatch):
  """A huggingface_hub whose downloads fail as they do without a network; returns the list of
  (function, args) calls it received."""
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  calls = []

  def failing(name):
    def download(*args, **kwargs):
      calls.append((name, args, kwargs))
      raise ConnectionError("no network")
    return download

  fake = types.ModuleType("huggingface_hub")
  fake.hf_hub_download = failing("hf_hub_download")
  fake.snapshot_download = failing("snapshot_download")
  monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
  return calls


@pytest.fixture(scope="session")
def cheap_xla_flags() -> str:
  """XLA_FLAGS for the command lines tests start: the cheap CPU backend, one device."""
  return CHEAP_XLA_FLAGS


@pytest.fixture
def new_arrays():
  """A function listing the shapes of the jax arrays created since the test began. It holds the
  arrays alive at the start, so that one of them collected meanwhile can neither hide a new one
  from a count nor lend it its id."""
  import jax  # pylint: disable=g-import-not-at-top
  before = jax.live_arrays()
  return lambda: [a.shape for a in jax.live_arrays() if not any(a is b for b in before)]


@pytest.fixture(scope="session")
def c2i_demo_run(tmp_path_factory):
  """The whole digits demo at test size (configs/demo.py:size=test, with its evaluation), run
  once per test process: (config, workdir, summary). Tests that use it carry
  pytest.mark.xdist_group("c2i_demo") so that they share one run (setup.cfg: --dist
  loadgroup)."""
  from configs import demo as demo_configs  # pylint: disable=g-import-not-at-top
  from grn_jax.demo import run as demo_run_module  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("demo"))
  config = demo_configs.get_config("size=test")
  config.mesh.update(data=1)     # one of the 8 fake CPU devices
  config.demo.evaluate = True
  summary = demo_run_module.run_demo(config, workdir)
  return config, workdir, summary
