"""The umT5 text encoder and its prompt tokenizer together: prompts -> features.

  encoder = PromptEncoder.from_config(config.text_encoder)   # converted params + tokenizer
  features, mask = encoder([t2v_prompt(p) for p in prompts])  # float32 [B, L, dim], bool [B, L]

L is the length bucket of the longest prompt, so the jitted encoder compiles once per
(batch size, bucket). Rows past the mask are padding (the official pipeline drops them).
"""

import functools
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grn_jax import checkpointing
from grn_jax import random_init
from grn_jax import sharding
from grn_jax.models import umt5
from grn_jax.text.tokenize import PromptTokenizer


@random_init.program
def _init_encoder(module: umt5.UMT5Encoder, key: jax.Array) -> Any:
  """Random boxed params of the encoder (compiled once per module and process)."""
  ids = jnp.zeros((1, 1), jnp.int32)
  return module.init(key, ids, ids.astype(bool))["params"]


def load_text_encoder(cfg, mesh=None, rules=None) -> tuple[umt5.UMT5Encoder, Any]:
  """(encoder module, params) from the `text_encoder` section; params from cfg.checkpoint.

  Args:
    cfg: the `text_encoder` section (configs/umt5.py); `checkpoint` is the `params` folder that
      `python -m grn_jax.convert --kind=umt5` writes.
    mesh, rules: optional mesh and logical axis rules; the params are then restored directly
      onto their shardings (otherwise onto the first device).
  """
  module = umt5.build_umt5(cfg)
  if cfg.random_init:
    logging.warning("text_encoder.random_init=True: a RANDOM text encoder (tests only); "
                    "text_encoder.checkpoint=%r is ignored.", cfg.checkpoint)
    return module, nn.unbox(_init_encoder(module, jax.random.key(0)))
  if not cfg.checkpoint:
    raise ValueError("text_encoder.checkpoint is empty: convert the released encoder with "
                     "`python -m grn_jax.convert --kind=umt5 --src=hf://bytedance-research/GRN/"
                     "umt5-xxl --dst=DIR --config=configs/umt5.py:variant=xxl` and pass "
                     "--config.text_encoder.checkpoint=DIR/params (or "
                     "text_encoder.random_init=True for a test run).")
  return module, checkpointing.restore_params(cfg.checkpoint,
                                              abstract_params(module, mesh, rules))


def abstract_params(module: umt5.UMT5Encoder, mesh=None, rules=None) -> Any:
  """The encoder params as jax.ShapeDtypeStructs on their shardings: by the logical axis
  `rules` over `mesh`, or on the first device without a mesh. Creates no array."""
  ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  boxed = jax.eval_shape(module.init, jax.eval_shape(jax.random.key, 0), ids, ids)["params"]
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, nn.unbox(boxed))
  else:
    shardings = sharding.logical_shardings(boxed, mesh, rules)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      nn.unbox(boxed), shardings)


@functools.lru_cache(maxsize=8)
def make_forward(module: umt5.UMT5Encoder, rules: tuple = ()):
  """THE encoder program: jit((params, ids int32 [B, L], mask bool [B, L]) -> features
  float32 [B, L, dim]) with the logical axis `rules` (a tuple) active; one per module and rules
  in a process (PromptEncoder runs it, `python -m grn_jax.aot --program=encode_text` compiles
  it)."""

  def forward(params, ids, mask):
    with nn.logical_axis_rules(rules):
      return module.apply({"params": params}, ids, mask)
  return jax.jit(forward)


class PromptEncoder:
  """Tokenizes prompts into a length bucket and runs the jitted encoder on them."""

  def __init__(self, module: umt5.UMT5Encoder, params, tokenizer: PromptTokenizer,
               mesh=None, rules=None):
    """`mesh` and `rules` (as for `load_text_encoder`) make the activations' logical axis
    constraints apply; without them the params' shardings alone guide the compiler."""
    self.module, self.params, self.tokenizer, self.mesh = module, params, tokenizer, mesh
    self.rules = sharding.rules_from_config(rules) if rules is not None else ()
    self.forward = make_forward(module, tuple(self.rules))

  @classmethod
  def from_config(cls, cfg, mesh=None, rules=None) -> "PromptEncoder":
    module, params = load_text_encoder(cfg, mesh, rules)
    return cls(module, params, PromptTokenizer.from_config(cfg), mesh, rules)

  def __call__(self, prompts: Sequence[str],
               length: int | None = None) -> tuple[jnp.ndarray, np.ndarray]:
    """float32 [B, L, dim] features and bool [B, L] mask of B prompts (see PromptTokenizer)."""
    ids, mask = self.tokenizer(prompts, length)
    if self.mesh is None:
      return self.forward(self.params, ids, mask), mask
    with jax.set_mesh(self.mesh):
      return self.forward(self.params, ids, mask), mask
