"""Random parameter inits for tests and tiny runs, compiled once per module.

An init program runs once and does little work, but it holds one RNG stream per parameter, and
XLA:CPU's full optimisation spends most of a tiny test's time on it (about 25 s of CPU for the
tiny video tokenizer). On CPU it is compiled with XLA's cheap backend instead (about 4 s; the same
values to float32 rounding), elsewhere as usual.

  @random_init.program
  def init_x(module, key):
    return module.init(key, example)["params"]

  params = init_x(module, jax.random.key(0))   # compiled on the first call per module
  shapes = init_x.shape(module)                # ShapeDtypeStructs, nothing computed
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax

CPU_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


class InitProgram:
  """fn(module, key) -> params, compiled once per (hashable) module; see the module docstring."""

  def __init__(self, fn: Callable[[nn.Module, jax.Array], Any]):
    self._fn = fn
    self._compiled: dict[nn.Module, Any] = {}
    functools.update_wrapper(self, fn)

  def __call__(self, module: nn.Module, key: jax.Array) -> Any:
    compiled = self._compiled.get(module)
    if compiled is None:
      lowered = jax.jit(functools.partial(self._fn, module)).lower(key)
      options = CPU_OPTIONS if jax.default_backend() == "cpu" else None
      compiled = self._compiled[module] = lowered.compile(options)
    return compiled(key)

  def shape(self, module: nn.Module) -> Any:
    return jax.eval_shape(functools.partial(self._fn, module), jax.eval_shape(jax.random.key, 0))


def program(fn: Callable[[nn.Module, jax.Array], Any]) -> InitProgram:
  return InitProgram(fn)
