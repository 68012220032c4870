"""The programs the runs use, built for any mesh from abstract inputs (nothing is allocated).

  program = build(config, "train", mesh)     # train | sample | decode | encode_text | denoise
  compiled = program.lower().compile()

Each program is made by the project's own builder, the one a run calls, with its shardings,
donation, remat and scan settings:
  train        grn_jax.trainers.loop.build_program(config, mesh): the jitted step of the task of
               config.task (state and metrics donated), on its abstract state, batch and metrics;
  sample       grn_jax.sampling.generate.batch_runner: one batch of the sampler, the tokenizer
               decode and the uint8 conversion in one jit, on generate.abstract_inputs (C2I);
  decode       grn_jax.tokenizer_io.make_decode_fn: HBQ labels -> images of the config's tokenizer
               (params replicated, one row per batch device unless --batch);
  encode_text  grn_jax.text.encoder.make_forward: the umT5 encoder of config.text_encoder on
               prompts padded to its longest length bucket, params sharded by the logical rules;
  denoise      T2I/T2V: one network pass of the sampler (models.build_t2iv(config.model), its
               `denoise` method) on the labels of config.sample's size and a cached text prefix
               of TEXT_TOKENS, params sharded by the logical rules (batch 2 = one guided prompt).

Model FLOPs (ours, next to the compiler's count, which sees a loop body once): training uses
the task's count (C2I: 3x the forward's matmuls, grn_jax.flops), else 3x the jaxpr count of the
loss; the sampler counts the network passes of the fixed-budget schedule (two where guidance
is on: batch doubling) plus the decode; decode and encode_text count their jaxprs
(grn_jax.flops.jaxpr_flops, scan bodies times their length).
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax import flops
from grn_jax import hbq
from grn_jax import models
from grn_jax import resolution
from grn_jax import sharding
from grn_jax import tokenizer_io
from grn_jax.models import grn_t2iv
from grn_jax.sampling import generate
from grn_jax.sampling import guidance
from grn_jax.sampling import refine
from grn_jax.text import encoder as text_encoder
from grn_jax.trainers import loop

PROGRAMS = ("train", "sample", "decode", "encode_text", "denoise")
TEXT_TOKENS = 512  # the official maximum prompt length (the denoise program's text prefix)


@dataclasses.dataclass
class Program:
  """One program of a config on a mesh, abstract until lowered.

  Attributes:
    name: one of PROGRAMS.
    mesh: the device mesh it is built for.
    global_batch: rows of one call (training: examples of one step).
    inputs: the batch inputs, e.g. 'labels int32[1024,16,16,16]'.
    settings: what sets its memory (dtype, remat, scan, attention, chunks, steps ...).
    model_flops: our FLOP count of one call (all devices).
    model_flops_rule: how it was counted.
  """
  name: str
  mesh: jax.sharding.Mesh
  global_batch: int
  inputs: str
  settings: dict[str, Any]
  model_flops: float
  model_flops_rule: str
  _lower: Callable[[], jax.stages.Lowered]

  def lower(self) -> jax.stages.Lowered:
    with jax.set_mesh(self.mesh):
      return self._lower()


def batch_devices(mesh: jax.sharding.Mesh) -> int:
  """Devices the batch axis is split over (the mesh's 'data' x 'fsdp')."""
  return int(np.prod([mesh.shape[a] for a in refine.BATCH_AXES if a in mesh.shape]))


def _unsharded(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def _describe(inputs: dict[str, Any]) -> str:
  return ", ".join(f"{name} {x.dtype}[{','.join(map(str, x.shape))}]"
                   for name, x in inputs.items())


def _check_batch(batch: int, mesh: jax.sharding.Mesh, field: str) -> int:
  shards = batch_devices(mesh)
  if batch <= 0 or batch % shards:
    raise ValueError(f"{field}={batch} must be a positive multiple of the {shards} batch "
                     f"devices of the mesh {dict(mesh.shape)}.")
  return batch


def _train(config: ml_collections.ConfigDict, mesh, batch: int) -> Program:
  if batch:
    raise ValueError("--batch is for sample, decode and encode_text; the training batch is "
                     "--config.train.global_batch_size.")
  loop.check_batch(config, mesh)
  program = loop.build_program(config, mesh)
  global_batch = int(config.train.global_batch_size)
  per_example = program.task.model_flops_per_example()
  rule = "the task's model FLOPs per example x global batch"
  if per_example is None:
    key = jax.eval_shape(jax.random.key, 0)
    forward = flops.jaxpr_flops(lambda p, b, k: program.task.loss(p, b, k)[0],
                                _unsharded(program.abstract_state.params),
                                _unsharded(program.abstract_batch), key)
    per_example, rule = 3 * forward / global_batch, "3 x the loss's jaxpr matmul/conv FLOPs"
  model = config.model if "model" in config else config.tokenizer
  settings = {k: model[k] for k in ("dtype", "remat_policy", "scan_layers", "attention_impl",
                                    "frame_chunk") if k in model}
  return Program("train", mesh, global_batch, _describe(program.abstract_batch), settings,
                 per_example * global_batch, rule, program.lower)


def _guided_passes(family) -> int:
  """Network passes of a fixed-budget run of the family's spec (2 at steps with guidance)."""
  spec, settings = family.spec, family.settings
  total = jnp.full((1,), spec.num_steps, jnp.int32)
  passes = 0
  for step in range(spec.num_steps):
    t = spec.schedule.keep_ratio_at(step, total, spec.num_steps, spec.warmup_steps,
                                    settings.schedule_shift)
    passes += 1 + int(guidance.active(t, settings.cfg_scale, settings.cfg_low,
                                      settings.cfg_high, spec.guidance)[0])
  return passes


def _sample(config: ml_collections.ConfigDict, mesh, batch: int) -> Program:
  family = generate.family_of(config)
  batch = _check_batch(batch or int(config.sample.batch_size), mesh,
                       "--batch" if batch else "config.sample.batch_size")
  tokenizer = models.build_tokenizer(config.tokenizer)
  decode_fn = tokenizer_io.TokenizerDecode(tokenizer)
  run = generate.batch_runner(family.rows_fn(tokenizer_io.Uint8Decode(decode_fn)))
  decode_params = tokenizer_io.abstract_params(tokenizer)
  args = generate.abstract_inputs(family, decode_params, mesh, batch)
  labels = jax.ShapeDtypeStruct((batch, *family.spec.label_shape), jnp.int32)
  keep_ratio = jax.ShapeDtypeStruct((batch,), jnp.float32)
  forward = flops.jaxpr_flops(family.apply_fn, _unsharded(args[0]), labels, keep_ratio,
                              _unsharded(args[1]))
  latent = jax.ShapeDtypeStruct(
      (batch, *family.spec.label_shape[:-1], config.tokenizer.latent_dim), jnp.float32)
  decode = flops.jaxpr_flops(decode_fn, decode_params, latent)
  passes = _guided_passes(family)
  sample_cfg = config.sample
  settings = dict(num_steps=sample_cfg.num_steps, cfg_scale=sample_cfg.cfg_scale,
                  cfg_interval=tuple(sample_cfg.cfg_interval), adaptive=family.spec.adaptive,
                  dtype=config.model.dtype, attention_impl=config.model.attention_impl,
                  frame_chunk=config.tokenizer.frame_chunk,
                  tile_latent=config.tokenizer.tile_latent)
  return Program("sample", mesh, batch, _describe(dict(class_labels=args[1])), settings,
                 passes * forward + decode,
                 f"{passes} network passes (guidance doubles the batch) + the decode, jaxpr "
                 "matmul/conv FLOPs", lambda: run.lower(*args))


def decode_labels(config: ml_collections.ConfigDict) -> tuple[tuple[int, ...], int, str]:
  """(label shape without the batch, hbq_rounds, label_mode) of what config's runs decode:
  C2I samples, T2I/T2V samples of config.sample's size, the tokenizer task's images."""
  tok = config.tokenizer
  if config.task == "c2i":
    model = config.model
    return ((model.input_size, model.input_size,
             hbq.num_labels(model.latent_dim, model.hbq_rounds, model.label_mode)),
            model.hbq_rounds, model.label_mode)
  if config.task in ("t2i", "t2v"):
    sample = config.sample
    h, w = resolution.latent_grid(sample.h_div_w, sample.pixels)
    frames = resolution.latent_frames(resolution.num_frames(sample.duration))
    rounds = config.model.hbq_rounds
    return (frames, h, w, hbq.num_labels(tok.latent_dim, rounds, "bit")), rounds, "bit"
  if config.task == "tokenizer":
    side = config.data.image_size // resolution.TOKENIZER_STRIDE
    rounds = config.reconstruction.hbq_rounds
    return (side, side, hbq.num_labels(tok.latent_dim, rounds, "ind")), rounds, "ind"
  raise ValueError(f"config.task={config.task!r}: --program=decode knows the tasks c2i, t2i, "
                   "t2v and tokenizer.")


def _decode(config: ml_collections.ConfigDict, mesh, batch: int) -> Program:
  tokenizer = models.build_tokenizer(config.tokenizer)
  shape, rounds, mode = decode_labels(config)
  batch = _check_batch(batch or batch_devices(mesh), mesh, "--batch")
  decode = tokenizer_io.make_decode_fn(tokenizer, rounds, mode)
  replicated = sharding.replicated(mesh)
  params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                        tokenizer_io.abstract_params(tokenizer))
  labels = jax.ShapeDtypeStruct((batch, *shape), jnp.int32,
                                sharding=sharding.batch_sharding(mesh, len(shape) + 1))
  settings = {k: config.tokenizer[k] for k in ("dtype", "frame_chunk", "tile_latent",
                                               "tile_overlap")}
  return Program("decode", mesh, batch, _describe(dict(labels=labels)), settings,
                 flops.jaxpr_flops(decode, _unsharded(params), _unsharded(labels)),
                 "jaxpr matmul/conv FLOPs", lambda: decode.lower(params, labels))


def _encode_text(config: ml_collections.ConfigDict, mesh, batch: int) -> Program:
  if "text_encoder" not in config:
    raise ValueError("--program=encode_text needs a config with a text_encoder section, e.g. "
                     "--config=configs/umt5.py:variant=xxl.")
  cfg = config.text_encoder
  rules = sharding.rules_from_config(config.sharding_rules)
  module = models.build_umt5(cfg)
  forward = text_encoder.make_forward(module, tuple(rules))
  params = text_encoder.abstract_params(module, mesh, rules)
  batch = _check_batch(batch or batch_devices(mesh), mesh, "--batch")
  length = max(cfg.length_buckets)
  batch_sharding = sharding.batch_sharding(mesh, 2)
  ids = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=batch_sharding)
  mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_, sharding=batch_sharding)
  settings = {k: cfg[k] for k in ("dtype", "scan_layers", "remat_policy")}
  return Program("encode_text", mesh, batch, _describe(dict(ids=ids, mask=mask)), settings,
                 flops.jaxpr_flops(forward, _unsharded(params), _unsharded(ids),
                                   _unsharded(mask)),
                 "jaxpr matmul FLOPs", lambda: forward.lower(params, ids, mask))


def _denoise(config: ml_collections.ConfigDict, mesh, batch: int) -> Program:
  if config.task not in ("t2i", "t2v"):
    raise ValueError(f"--program=denoise is the T2I/T2V network pass; config.task="
                     f"{config.task!r} (use --config=configs/t2iv.py:variant=2B,task=t2v).")
  model = models.build_t2iv(config.model)
  rules = sharding.rules_from_config(config.sharding_rules)
  shape = decode_labels(config)[0]
  h_div_w = resolution.nearest_template(config.sample.h_div_w)
  batch = _check_batch(batch or batch_devices(mesh), mesh, "--batch")
  key = jax.eval_shape(jax.random.key, 0)
  one = lambda *s, dtype=jnp.float32: jax.ShapeDtypeStruct(s, dtype)
  with nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(model.init, key, one(1, 1, 1, 1, shape[-1], dtype=jnp.int32), one(1),
                           one(1, 1, config.model.text_dim), one(1, 1, dtype=jnp.bool_))
  shardings = sharding.logical_shardings(boxed, mesh, rules)["params"]
  params = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        nn.unbox(boxed)["params"], shardings)
  cache_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, refine.BATCH_AXES))
  kv = jax.ShapeDtypeStruct((config.model.depth, batch, TEXT_TOKENS, config.model.num_kv_heads,
                             model.head_dim), jnp.float32, sharding=cache_sharding)
  text = grn_t2iv.TextCache(kv, kv, jax.ShapeDtypeStruct(
      (batch, TEXT_TOKENS), jnp.bool_, sharding=sharding.batch_sharding(mesh, 2)))
  labels = jax.ShapeDtypeStruct((batch, *shape), jnp.int32,
                                sharding=sharding.batch_sharding(mesh, len(shape) + 1))
  scale = jax.ShapeDtypeStruct((batch,), jnp.float32, sharding=sharding.batch_sharding(mesh, 1))

  @jax.jit
  def denoise(params, labels, scale, text):
    with nn.logical_axis_rules(rules):
      return model.apply({"params": params}, labels, scale, text, h_div_w=h_div_w,
                         method="denoise")

  settings = {k: config.model[k] for k in ("dtype", "remat_policy", "scan_layers",
                                           "attention_impl")}
  settings["tokens"] = int(np.prod(shape[:-1]))
  return Program("denoise", mesh, batch, _describe(dict(labels=labels)), settings,
                 flops.jaxpr_flops(denoise, _unsharded(params), _unsharded(labels),
                                   _unsharded(scale), _unsharded(text)),
                 "jaxpr matmul FLOPs (attention over the full sequence)",
                 lambda: denoise.lower(params, labels, scale, text))


_BUILDERS = {"train": _train, "sample": _sample, "decode": _decode, "encode_text": _encode_text,
             "denoise": _denoise}


def build(config: ml_collections.ConfigDict, program: str, mesh: jax.sharding.Mesh,
          batch: int = 0) -> Program:
  """The `program` of `config` on `mesh` (see the module docstring).

  Args:
    config: a whole config (configs/*.py).
    program: one of PROGRAMS.
    mesh: the device mesh (sharding.make_mesh(config.mesh, devices)).
    batch: rows of a sample / decode / encode_text call (0: the config's, or one per batch
      device).
  """
  if program not in _BUILDERS:
    raise ValueError(f"--program={program!r}; choose from {', '.join(PROGRAMS)}.")
  return _BUILDERS[program](config, mesh, batch)
