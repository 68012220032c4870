"""The attention op of every GRN family: softmax(q k^T * scale + bias) v with masks and GQA.

  q     [B, N, Hq, D]      queries
  k, v  [B, M, Hkv, D]     keys and values; Hq = G * Hkv (grouped-query heads: query head
                           h reads key/value head h // G, as the official `repeat_kv`)
  kv_mask        bool [B, M]   False = padded key
  q_segment_ids  int  [B, N]   a query attends a key iff both ids are equal (and the key is
  kv_segment_ids int  [B, M]   not padded); e.g. id 0 for padding on both sides
  bias           [B or 1, Hq, N, M]   additive logits bias (impl 'xla' or 'cudnn' only)
  -> out [B, N, Hq, D] in q.dtype

Logits and softmax are float32 whatever the input dtype (the official code upcasts). A query
row with no allowed key (a fully masked row) returns zeros, never NaN, in every impl.

Implementations (`impl`, from `config.model.attention_impl`):
  * 'xla': the whole score matrix, heads-major, with a hand-written VJP that saves the
    probabilities (on XLA:CPU ~25% faster than differentiating `jax.nn.dot_product_attention`).
  * 'cudnn': `jax.nn.dot_product_attention` (cuDNN flash attention on GPUs for bf16/fp16, a
    mask becoming a dense bias there; its XLA implementation elsewhere, so it also runs in the
    CPU tests).
  * 'splash': the Pallas TPU splash-attention kernel, under `shard_map` over the mesh axes of the
    'batch' and 'act_heads' logical axes when a mesh is set, and of 'length' for the queries (a
    sequence-sharded run: each device attends its query shard to the gathered keys); lengths
    are padded to its block size and the padding masked; `interpret=True` off TPU (tests).
  * 'chunked': memory-bounded flash attention in plain XLA: query chunks (`lax.map`) times key
    chunks (`lax.scan`) with an online softmax; its custom VJP recomputes the probabilities per
    chunk pair, so neither pass holds more than a [block_q, block_kv] score tile per head.
  * 'auto': cudnn on GPU, splash on TPU; on CPU xla below `CHUNKED_MIN_SCORES` score elements
    per head (N * M) and chunked from there on; xla whenever a bias is given (not on GPU).

The platform is that of the devices the program is compiled for (`target_platform`): the mesh
set by `jax.set_mesh`, else the default backend. So a program built on a CPU host for a TPU
topology (`python -m grn_jax.aot`) gets the compiled splash kernel, as it would on the TPU.
"""

import functools
import math

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "cudnn", "splash", "chunked")
# auto on CPU: from this many score elements per head (N * M, e.g. 4096 x 4096) chunked replaces
# xla, whose [B, H, N, M] float32 scores (and saved probabilities) would dominate memory.
CHUNKED_MIN_SCORES = 4096 * 4096
CHUNK_Q = 512      # target query / key chunk lengths of 'chunked' (rounded to split evenly)
CHUNK_KV = 1024
SPLASH_BLOCK = 512  # largest splash block; sequences are padded to a multiple of the block
_F32 = jnp.float32


def target_platform() -> str:
  """'cpu' | 'gpu' | 'tpu': the platform of the current mesh's devices (`jax.set_mesh`), else
  the default backend's."""
  mesh = jax.sharding.get_abstract_mesh()
  device = None if mesh.empty else mesh.abstract_device
  return device.platform if device is not None else jax.default_backend()


def resolve_impl(impl: str, num_queries: int, num_keys: int, has_bias: bool = False,
                 backend: str | None = None) -> str:
  """The implementation `impl` stands for on `backend` (default: `target_platform()`)."""
  if impl not in IMPLS:
    raise ValueError(f"attention impl must be one of {IMPLS}, got {impl!r} "
                     "(config.model.attention_impl).")
  if impl != "auto":
    if has_bias and impl in ("splash", "chunked"):
      raise ValueError(f"attention impl {impl!r} takes no additive bias; use 'xla' or 'cudnn' "
                       "(config.model.attention_impl).")
    return impl
  backend = backend or target_platform()
  if backend == "gpu":
    return "cudnn"
  if has_bias:
    return "xla"
  if backend == "tpu":
    return "splash"
  return "chunked" if num_queries * num_keys >= CHUNKED_MIN_SCORES else "xla"


def attention(q: jnp.ndarray, k: jnp.ndarray, v: jnp.ndarray, *,
              kv_mask: jnp.ndarray | None = None,
              q_segment_ids: jnp.ndarray | None = None,
              kv_segment_ids: jnp.ndarray | None = None,
              bias: jnp.ndarray | None = None,
              scale: float | None = None,
              impl: str = "auto",
              heads_major: bool = False) -> jnp.ndarray:
  """softmax(q k^T * scale + bias) v over the allowed keys (see the module docstring).

  Args:
    q: [B, N, Hq, D] queries.
    k: [B, M, Hkv, D] keys, Hq a multiple of Hkv.
    v: [B, M, Hkv, D] values.
    kv_mask: optional bool [B, M], False for padded keys.
    q_segment_ids: optional int [B, N]; with kv_segment_ids, a query attends a key iff the ids
      are equal.
    kv_segment_ids: optional int [B, M].
    bias: optional float [B or 1, Hq, N, M] added to the logits ('xla', 'cudnn', 'auto').
    scale: logits scale, default D ** -0.5 (umT5 uses 1.0).
    impl: 'auto' | 'xla' | 'cudnn' | 'splash' | 'chunked'.
    heads_major: q, k, v and the output are [B, H, N, D] instead: the layout 'xla' computes
      in, so a caller that has it (the C2I block) saves the transposes on XLA:CPU.

  Returns:
    [B, N, Hq, D] (heads_major: [B, Hq, N, D]) in q.dtype; rows without any allowed key are
    zeros.
  """
  if heads_major:
    q, k, v = (a.swapaxes(1, 2) for a in (q, k, v))  # checks and the other impls: [B, N, H, D]
  batch, num_q, heads, head_dim = _check_inputs(q, k, v, kv_mask, q_segment_ids,
                                                kv_segment_ids, bias)
  num_kv, kv_heads = k.shape[1], k.shape[2]
  impl = resolve_impl(impl, num_q, num_kv, bias is not None)
  scale = head_dim**-0.5 if scale is None else float(scale)
  ids = _segment_ids(kv_mask, q_segment_ids, kv_segment_ids, batch, num_q, num_kv)
  groups = heads // kv_heads
  if impl == "xla":
    # Heads-major (a no-op for heads_major callers), the G query heads of a key/value head and
    # their N queries as one axis of G * N rows: 4-D matmuls that XLA:CPU fuses with the
    # softmax, no repeated k, v. In float32 the scale goes into q (N x D products, not N x M).
    rows = groups * num_q
    q_rows = q.swapaxes(1, 2).reshape(batch, kv_heads, rows, head_dim)
    allowed = None
    if ids is not None:
      allowed = ids[0][:, None, :, None] == ids[1][:, None, None, :]  # [B, 1, N, M]
      if groups > 1:
        allowed = jnp.broadcast_to(allowed[:, :, None], (batch, 1, groups, num_q, num_kv))
        allowed = allowed.reshape(batch, 1, rows, num_kv)
    if bias is not None:
      bias = bias.reshape(bias.shape[0], kv_heads, rows, num_kv)
    if q.dtype == jnp.float32:
      q_rows, scale = q_rows * scale, 1.0
    out = _softmax_attention(q_rows, k.swapaxes(1, 2), v.swapaxes(1, 2), allowed, bias, scale)
    out = out.reshape(batch, heads, num_q, head_dim)
    return out if heads_major else out.swapaxes(1, 2)
  if impl == "cudnn":
    out = _cudnn(q, k, v, ids, bias, scale)
  elif impl == "splash":  # the kernel has no scale: fold it into q
    out = _splash(q * jnp.asarray(scale, q.dtype), k, v, ids)
  else:
    q5 = q.reshape(batch, num_q, kv_heads, groups, head_dim)  # head h = kv * G + g
    out = _chunked(q5, k, v, ids, scale).reshape(batch, num_q, heads, head_dim)
  return out.swapaxes(1, 2) if heads_major else out


def _check_inputs(q, k, v, kv_mask, q_segment_ids, kv_segment_ids, bias):
  if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
    raise ValueError(f"attention: q must be [B, N, Hq, D] and k, v [B, M, Hkv, D] (equal), got "
                     f"q {q.shape}, k {k.shape}, v {v.shape}.")
  batch, num_q, heads, head_dim = q.shape
  if k.shape[0] != batch or k.shape[3] != head_dim or heads % k.shape[2]:
    raise ValueError(f"attention: k/v {k.shape} do not fit q {q.shape} (same batch and head "
                     "size, query heads a multiple of key/value heads).")
  if not q.dtype == k.dtype == v.dtype:
    raise TypeError(f"attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype}).")
  num_kv = k.shape[1]
  if kv_mask is not None and (kv_mask.shape != (batch, num_kv) or kv_mask.dtype != jnp.bool_):
    raise ValueError(f"attention: kv_mask must be bool [{batch}, {num_kv}], got "
                     f"{kv_mask.dtype} {kv_mask.shape}.")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("attention: pass both q_segment_ids and kv_segment_ids, or neither.")
  if q_segment_ids is not None:
    if (q_segment_ids.shape != (batch, num_q) or kv_segment_ids.shape != (batch, num_kv)
        or not jnp.issubdtype(q_segment_ids.dtype, jnp.integer)
        or not jnp.issubdtype(kv_segment_ids.dtype, jnp.integer)):
      raise ValueError(f"attention: segment ids must be int [{batch}, {num_q}] and "
                       f"[{batch}, {num_kv}], got {q_segment_ids.shape}, {kv_segment_ids.shape}.")
  if bias is not None and (bias.ndim != 4 or bias.shape[0] not in (1, batch)
                           or bias.shape[1:] != (heads, num_q, num_kv)):
    raise ValueError(f"attention: bias must be [{batch} or 1, {heads}, {num_q}, {num_kv}], got "
                     f"{bias.shape}.")
  return batch, num_q, heads, head_dim


def _segment_ids(kv_mask, q_segment_ids, kv_segment_ids, batch, num_q, num_kv):
  """Every mask as (q_ids int32 [B, N], kv_ids int32 [B, M]): allowed iff equal; None if none.

  A padded key gets an id below every query id, so no query attends it.
  """
  if kv_mask is None and q_segment_ids is None:
    return None
  if q_segment_ids is None:
    q_ids = jnp.zeros((batch, num_q), jnp.int32)
    kv_ids = jnp.zeros((batch, num_kv), jnp.int32)
  else:
    q_ids, kv_ids = q_segment_ids.astype(jnp.int32), kv_segment_ids.astype(jnp.int32)
  if kv_mask is not None:
    kv_ids = jnp.where(kv_mask, kv_ids, _padding_id(q_ids))
  return q_ids, kv_ids


def _padding_id(q_ids):
  return jnp.min(q_ids) - 1


def _has_key(q_ids, kv_ids):
  """bool [B, N]: whether query n has any key with its id (sorted search, no [N, M] matrix)."""
  def one(qi, ki):
    keys = jnp.sort(ki)
    pos = jnp.clip(jnp.searchsorted(keys, qi), 0, keys.shape[0] - 1)
    return keys[pos] == qi
  return jax.vmap(one)(q_ids, kv_ids)


# ---------------------------------------------------------------------------------------------
# xla: whole score matrix, probabilities saved for a hand-written backward.


def _masked_softmax(logits, allowed):
  """Softmax over allowed entries; rows with none allowed give zeros."""
  logits = jnp.where(allowed, logits, -jnp.inf)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  exp = jnp.exp(logits - jnp.where(jnp.isneginf(row_max), 0.0, row_max))
  total = jnp.sum(exp, axis=-1, keepdims=True)
  return exp / jnp.where(total == 0, 1.0, total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _softmax_attention(q, k, v, allowed, bias, scale):
  """q [B, K, R, D] (R query rows per key/value head), k/v [B, K, M, D], allowed bool
  broadcastable to [B, K, R, M] or None, bias [B|1, K, R, M] or None -> [B, K, R, D]. The scale
  multiplies the float32 logits."""
  return _softmax_attention_fwd(q, k, v, allowed, bias, scale)[0]


def _softmax_attention_fwd(q, k, v, allowed, bias, scale):
  logits = jnp.einsum("bkrd,bkmd->bkrm", q, k, preferred_element_type=_F32) * scale
  if bias is not None:
    logits = logits + bias.astype(_F32)
  probs = jax.nn.softmax(logits, axis=-1) if allowed is None else _masked_softmax(logits, allowed)
  out = jnp.einsum("bkrm,bkmd->bkrd", probs.astype(v.dtype), v)
  return out, (q, k, v, probs, out, bias)


def _softmax_attention_bwd(scale, res, dout):
  q, k, v, probs, out, bias = res
  p = probs.astype(v.dtype)
  dv = jnp.einsum("bkrm,bkrd->bkmd", p, dout)
  dp = jnp.einsum("bkrd,bkmd->bkrm", dout, v, preferred_element_type=_F32)
  delta = jnp.sum(dout.astype(_F32) * out.astype(_F32), axis=-1, keepdims=True)
  dlogits = probs * (dp - delta)  # zero wherever the probability is (masked entries)
  dscores = (dlogits * scale).astype(q.dtype)
  dq = jnp.einsum("bkrm,bkmd->bkrd", dscores, k)
  dk = jnp.einsum("bkrm,bkrd->bkmd", dscores, q)
  dbias = None
  if bias is not None:
    dbias = dlogits.sum(axis=0, keepdims=True) if bias.shape[0] == 1 else dlogits
    dbias = dbias.astype(bias.dtype)
  return dq, dk, dv, None, dbias


_softmax_attention.defvjp(_softmax_attention_fwd, _softmax_attention_bwd)


# ---------------------------------------------------------------------------------------------
# cudnn: jax.nn.dot_product_attention.


def _cudnn(q, k, v, ids, bias, scale):
  """cuDNN's fused kernel on GPUs for bf16/fp16 (its `implementation=None` means XLA in this
  JAX version, so it is asked for by name); the XLA fallback elsewhere."""
  mask = None
  if ids is not None:
    mask = ids[0][:, None, :, None] == ids[1][:, None, None, :]  # [B, 1, N, M]
  fused = target_platform() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
  out = jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(q.dtype),
                                     mask=mask, scale=scale,
                                     implementation="cudnn" if fused else "xla")
  if ids is None:
    return out
  # Its softmax over a fully masked row is uniform, not empty: zero those rows.
  return jnp.where(_has_key(*ids)[:, :, None, None], out, 0).astype(q.dtype)


# ---------------------------------------------------------------------------------------------
# splash: the Pallas TPU kernel (interpret mode off TPU).


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _splash_block(length: int) -> int:
  return min(SPLASH_BLOCK, _round_up(length, 128))


def _splash(q, k, v, ids):
  """q [B, N, Hq, D] (scale folded in) -> [B, N, Hq, D]; shard_map when a mesh is set."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return _splash_local(q, k, v, ids)
  batch_axes = _mesh_axes_dividing("batch", q.shape[0], mesh)
  head_axes = _mesh_axes_dividing("act_heads", math.gcd(q.shape[2], k.shape[2]), mesh)
  length_axes = _mesh_axes_dividing("length", q.shape[1], mesh)
  if length_axes and set(length_axes) & set((batch_axes or ()) + (head_axes or ())):
    length_axes = None  # a mesh axis shards one dimension at most
  q_spec = jax.sharding.PartitionSpec(batch_axes, length_axes, head_axes, None)
  kv_spec = jax.sharding.PartitionSpec(batch_axes, None, head_axes, None)
  ids_specs = None if ids is None else (jax.sharding.PartitionSpec(batch_axes, length_axes),
                                        jax.sharding.PartitionSpec(batch_axes, None))
  fn = jax.shard_map(_splash_local, in_specs=(q_spec, kv_spec, kv_spec, ids_specs),
                     out_specs=q_spec, check_vma=False)
  return fn(q, k, v, ids)


def _mesh_axes_dividing(logical: str, size: int, mesh):
  """Mesh axes of a logical axis (current flax rules) whose product divides `size`, or None."""
  axes = nn.logical_to_mesh_axes((logical,))[0]
  if axes is None:
    return None
  axes = tuple(a for a in (axes if isinstance(axes, tuple) else (axes,)) if a in mesh.shape)
  if not axes or size % math.prod(mesh.shape[a] for a in axes):
    return None
  return axes


def _splash_local(q, k, v, ids):
  from jax.experimental.pallas.ops.tpu import splash_attention as splash  # pylint: disable=g-import-not-at-top
  batch, num_q, heads, head_dim = q.shape
  num_kv, kv_heads = k.shape[1], k.shape[2]
  groups = heads // kv_heads
  block_q, block_kv = _splash_block(num_q), _splash_block(num_kv)
  pad_q, pad_kv = _round_up(num_q, block_q) - num_q, _round_up(num_kv, block_kv) - num_kv
  if pad_q or pad_kv:
    if ids is None:
      ids = (jnp.zeros((batch, num_q), jnp.int32), jnp.zeros((batch, num_kv), jnp.int32))
    q_ids, kv_ids = ids
    kv_ids = jnp.pad(kv_ids, ((0, 0), (0, pad_kv)), constant_values=0)
    kv_ids = kv_ids.at[:, num_kv:].set(_padding_id(q_ids))
    q_ids = jnp.pad(q_ids, ((0, 0), (0, pad_q)))
    ids = (q_ids, kv_ids)
  has_key = None if ids is None else _has_key(*ids)[:, :num_q]
  qh = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0))).transpose(0, 2, 1, 3)   # [B, Hq, N', D]
  kh = jnp.pad(k, ((0, 0), (0, pad_kv), (0, 0), (0, 0))).transpose(0, 2, 1, 3)  # [B, Hkv, M', D]
  vh = jnp.pad(v, ((0, 0), (0, pad_kv), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  shape = (num_q + pad_q, num_kv + pad_kv)
  sizes = splash.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv,
                            block_q_dkv=block_q, block_kv_dkv=block_kv,
                            block_kv_dkv_compute=block_kv, block_q_dq=block_q, block_kv_dq=block_kv)
  interpret = target_platform() != "tpu"
  segments = None if ids is None else splash.SegmentIds(ids[0], ids[1])
  if groups == 1:
    kernel = splash.make_splash_mha_single_device(
        splash.MultiHeadMask([splash.FullMask(shape)] * heads), block_sizes=sizes,
        interpret=interpret)
    call = lambda qb, kb, vb, seg: kernel(qb, kb, vb, segment_ids=seg)
  else:  # one multi-query kernel per key/value head: no repeated k, v
    kernel = splash.make_splash_mqa_single_device(
        splash.MultiHeadMask([splash.FullMask(shape)] * groups), block_sizes=sizes,
        interpret=interpret)
    per_kv_head = lambda qg, kg, vg, seg: kernel(qg, kg, vg, segment_ids=seg)
    call = lambda qb, kb, vb, seg: jax.vmap(per_kv_head, (0, 0, 0, None))(
        qb.reshape(kv_heads, groups, *qb.shape[1:]), kb, vb, seg).reshape(qb.shape)
  out = jax.vmap(call)(qh, kh, vh, segments)  # [B, Hq, N', D]
  out = out.transpose(0, 2, 1, 3)[:, :num_q].astype(q.dtype)
  if has_key is not None:
    out = jnp.where(has_key[:, :, None, None], out, 0).astype(q.dtype)
  return out


# ---------------------------------------------------------------------------------------------
# chunked: online softmax over key chunks, recomputing backward.


def _even_chunk(length: int, target: int) -> int:
  """A chunk length near `target` (multiple of 8) that splits `length` with little padding."""
  if length <= target:
    return length
  return _round_up(-(-length // -(-length // target)), 8)


def _chunked(q, k, v, ids, scale):
  """q [B, N, K, G, D], k/v [B, M, K, D] -> [B, N, K, G, D]."""
  num_q, num_kv = q.shape[1], k.shape[1]
  block_q, block_kv = _even_chunk(num_q, CHUNK_Q), _even_chunk(num_kv, CHUNK_KV)
  pad_q, pad_kv = _round_up(num_q, block_q) - num_q, _round_up(num_kv, block_kv) - num_kv
  if pad_kv:
    if ids is None:
      ids = (jnp.zeros(q.shape[:2], jnp.int32), jnp.zeros(k.shape[:2], jnp.int32))
    ids = (ids[0], jnp.pad(ids[1], ((0, 0), (0, pad_kv)), constant_values=0)
           .at[:, num_kv:].set(_padding_id(ids[0])))
    k, v = (jnp.pad(a, ((0, 0), (0, pad_kv), (0, 0), (0, 0))) for a in (k, v))
  if pad_q:
    q = jnp.pad(q, ((0, 0), (0, pad_q), (0, 0), (0, 0), (0, 0)))
    if ids is not None:
      ids = (jnp.pad(ids[0], ((0, 0), (0, pad_q))), ids[1])
  q_ids, kv_ids = (None, None) if ids is None else ids
  return _flash(q, k, v, q_ids, kv_ids, scale, block_q, block_kv)[:, :num_q]


def _split(x, block):
  """[B, L, ...] -> [L / block, B, block, ...]."""
  if x is None:
    return None
  x = x.reshape(x.shape[0], x.shape[1] // block, block, *x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _merge(x):
  """[n, B, block, ...] -> [B, n * block, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape(x.shape[0], -1, *x.shape[3:])


def _tile_logits(q_tile, k_tile, q_ids, kv_ids, scale):
  """[B, bq, K, G, D] x [B, bk, K, D] -> float32 [B, K, G, bq, bk], -inf where not allowed."""
  logits = jnp.einsum("bqkgd,bmkd->bkgqm", q_tile, k_tile, preferred_element_type=_F32) * scale
  if q_ids is None:
    return logits
  allowed = q_ids[:, None, None, :, None] == kv_ids[:, None, None, None, :]
  return jnp.where(allowed, logits, -jnp.inf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _flash(q, k, v, q_ids, kv_ids, scale, block_q, block_kv):
  return _flash_fwd(q, k, v, q_ids, kv_ids, scale, block_q, block_kv)[0]


def _flash_fwd(q, k, v, q_ids, kv_ids, scale, block_q, block_kv):
  k_tiles, v_tiles, kv_id_tiles = _split(k, block_kv), _split(v, block_kv), _split(kv_ids, block_kv)

  def q_chunk(args):
    q_tile, q_id_tile = args
    batch, bq, heads, groups, head_dim = q_tile.shape
    stat = (batch, heads, groups, bq)

    def kv_step(carry, tiles):
      row_max, total, acc = carry
      k_tile, v_tile, kv_id_tile = tiles
      logits = _tile_logits(q_tile, k_tile, q_id_tile, kv_id_tile, scale)
      new_max = jnp.maximum(row_max, logits.max(axis=-1))
      safe_max = jnp.where(jnp.isneginf(new_max), 0.0, new_max)
      probs = jnp.exp(logits - safe_max[..., None])
      correction = jnp.exp(row_max - safe_max)
      total = total * correction + probs.sum(axis=-1)
      acc = acc * correction[..., None] + jnp.einsum(
          "bkgqm,bmkd->bkgqd", probs.astype(v_tile.dtype), v_tile, preferred_element_type=_F32)
      return (new_max, total, acc), None

    init = (jnp.full(stat, -jnp.inf, _F32), jnp.zeros(stat, _F32),
            jnp.zeros((*stat, head_dim), _F32))
    (row_max, total, acc), _ = lax.scan(kv_step, init, (k_tiles, v_tiles, kv_id_tiles))
    empty = total == 0  # no allowed key: output 0, logsumexp 0 (every probability stays 0)
    out = acc / jnp.where(empty, 1.0, total)[..., None]
    lse = jnp.where(empty, 0.0, jnp.where(jnp.isneginf(row_max), 0.0, row_max)
                    + jnp.log(jnp.where(empty, 1.0, total)))
    return out.transpose(0, 3, 1, 2, 4).astype(q.dtype), lse

  outs, lse = lax.map(q_chunk, (_split(q, block_q), _split(q_ids, block_q)))
  out = _merge(outs)
  return out, (q, k, v, q_ids, kv_ids, out, lse)


def _flash_bwd(scale, block_q, block_kv, res, dout):
  q, k, v, q_ids, kv_ids, out, lse = res
  k_tiles, v_tiles, kv_id_tiles = _split(k, block_kv), _split(v, block_kv), _split(kv_ids, block_kv)

  def q_chunk(carry, tiles):
    dk_acc, dv_acc = carry
    q_tile, q_id_tile, out_tile, dout_tile, lse_tile = tiles
    delta = jnp.einsum("bqkgd,bqkgd->bkgq", dout_tile.astype(_F32), out_tile.astype(_F32))

    def kv_step(dq, kv):
      k_tile, v_tile, kv_id_tile = kv
      logits = _tile_logits(q_tile, k_tile, q_id_tile, kv_id_tile, scale)
      probs = jnp.exp(logits - lse_tile[..., None])
      dv = jnp.einsum("bkgqm,bqkgd->bmkd", probs.astype(v.dtype), dout_tile,
                      preferred_element_type=_F32)
      dprobs = jnp.einsum("bqkgd,bmkd->bkgqm", dout_tile, v_tile, preferred_element_type=_F32)
      dlogits = (probs * (dprobs - delta[..., None]) * scale).astype(q.dtype)
      dq = dq + jnp.einsum("bkgqm,bmkd->bqkgd", dlogits, k_tile, preferred_element_type=_F32)
      dk = jnp.einsum("bkgqm,bqkgd->bmkd", dlogits, q_tile, preferred_element_type=_F32)
      return dq, (dk, dv)

    dq, (dk, dv) = lax.scan(kv_step, jnp.zeros(q_tile.shape, _F32),
                            (k_tiles, v_tiles, kv_id_tiles))
    return (dk_acc + dk, dv_acc + dv), dq.astype(q.dtype)

  zeros = jnp.zeros(k_tiles.shape, _F32)
  (dk, dv), dq = lax.scan(q_chunk, (zeros, zeros), (
      _split(q, block_q), _split(q_ids, block_q), _split(out, block_q), _split(dout, block_q),
      lse))
  return _merge(dq), _merge(dk).astype(k.dtype), _merge(dv).astype(v.dtype), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
