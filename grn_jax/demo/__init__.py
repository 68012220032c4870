"""The embedded digits demo: `run_demo(config, workdir)` (configs/demo.py)."""

from grn_jax.demo.run import run_demo

__all__ = ["run_demo"]
