r"""The released umT5-XXL encoder (Wan-format .pth) -> grn_jax params, streamed in bf16.

  python -m grn_jax.convert --kind=umt5 --src=hf://bytedance-research/GRN/umt5-xxl \
      --dst=weights/umt5-xxl-jax --config=configs/umt5.py:variant=xxl

`--src` is the `umt5-xxl/` folder of the hub repo (hf://ORG/REPO/FOLDER, or a local copy of it:
`models_t5_umt5-xxl-enc-bf16.pth` plus the tokenizer files, at its top or in a `umt5-xxl/`
sub-folder), or the .pth file itself with the tokenizer files beside it. `--dst` receives
`params/` (an Orbax {'params': ...} checkpoint, restore with
`grn_jax.checkpointing.restore_params`) and `tokenizer/` (the tokenizer files, copied), so one
directory holds the encoder and its tokenizer.

Memory: the file is 11 GB of bf16; it is converted tensor by tensor without a float32 or a
second bf16 copy of the model. The file is memory-mapped (`torch.load(mmap=True)`), every
tensor goes on as a zero-copy numpy view in its stored dtype (layout changes are transposed
views), and Orbax writes the views one at a time, in 64 MiB chunks, without the deep copy its
numpy handler makes by default; the pages of each written tensor are handed back to the OS.
The peak is about the largest tensor (the 2 GB embedding) on top of the libraries
(`python -m grn_jax.benchmarks.umt5 --convert` measures it). Casting to another `dtype` than
the file's copies tensor by tensor, all of them at once (float32 XXL params are 23 GB).

Key layout (official `T5Encoder`, `shared_pos=False`), Linear weights [out, in]:
  token_embedding.weight [vocab, dim]                       -> token_embedding [vocab, dim]
  blocks.{i}.norm1.weight, .norm2.weight [dim]              -> layer_{i}/norm{1,2}/scale
  blocks.{i}.attn.{q,k,v}.weight [dim_attn, dim]            -> layer_{i}/{q,k,v} [dim, heads, hd]
  blocks.{i}.attn.o.weight [dim, dim_attn]                  -> layer_{i}/o [heads, hd, dim]
  blocks.{i}.ffn.gate.0.weight, .ffn.fc1.weight [ffn, dim]  -> layer_{i}/{gate,fc1} [dim, ffn]
  blocks.{i}.ffn.fc2.weight [dim, ffn]                      -> layer_{i}/fc2 [ffn, dim]
  blocks.{i}.pos_embedding.embedding.weight [buckets, heads] -> layer_{i}/pos_embedding
  norm.weight [dim]                                         -> norm/scale
With `scan_layers` the per-layer leaves are stacked under `layers` (that stack is a copy).
"""

import ctypes
import os
import shutil
from typing import Any, Callable

from absl import logging
import jax
import ml_dtypes
import numpy as np

from grn_jax.convert import common
from grn_jax.models import umt5

WEIGHTS_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
TOKENIZER_FILES = ("tokenizer.json", "spiece.model")
# Besides the vocabulary: the files the hub folder ships for the HF tokenizer, copied along.
TOKENIZER_EXTRAS = ("special_tokens_map.json", "tokenizer_config.json")
SAVE_CHUNK_BYTES = 64 << 20
HUB_MANUAL = ("Download it by hand, e.g. `huggingface-cli download {repo} --include "
              "'{folder}/*' --local-dir weights/` (or from https://huggingface.co/{repo}), then "
              "pass --src=weights/{folder}.")


# Per layer: official key suffix, our path inside layer_{i}, layout kind (see _layouts).
_LAYER_WEIGHTS = (
    ("norm1.weight", ("norm1", "scale"), "vector"),
    ("attn.q.weight", ("q",), "in_heads"),
    ("attn.k.weight", ("k",), "in_heads"),
    ("attn.v.weight", ("v",), "in_heads"),
    ("attn.o.weight", ("o",), "heads_out"),
    ("norm2.weight", ("norm2", "scale"), "vector"),
    ("ffn.gate.0.weight", ("gate",), "linear"),
    ("ffn.fc1.weight", ("fc1",), "linear"),
    ("ffn.fc2.weight", ("fc2",), "linear"),
    ("pos_embedding.embedding.weight", ("pos_embedding",), "table"),
)


def _torch_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
  """Official shape of each layer weight kind (Linear weights are [out, in])."""
  dim, attn, ffn = cfg["dim"], cfg["dim_attn"], cfg["dim_ffn"]
  return {"norm1.weight": (dim,), "norm2.weight": (dim,), "attn.q.weight": (attn, dim),
          "attn.k.weight": (attn, dim), "attn.v.weight": (attn, dim),
          "attn.o.weight": (dim, attn), "ffn.gate.0.weight": (ffn, dim),
          "ffn.fc1.weight": (ffn, dim), "ffn.fc2.weight": (dim, ffn),
          "pos_embedding.embedding.weight": (cfg["num_buckets"], cfg["num_heads"])}


def _layouts(cfg: dict[str, Any]):
  """kind -> (torch -> ours, ours -> torch); all are views (transposes and axis splits)."""
  dim, heads = cfg["dim"], cfg["num_heads"]
  head_dim = cfg["dim_attn"] // heads
  same = (lambda w: w, lambda w: w)
  return {
      "vector": same,
      "table": same,
      "linear": (lambda w: w.T, lambda w: w.T),
      # [heads * head_dim, dim] <-> [dim, heads, head_dim]
      "in_heads": (lambda w: w.T.reshape(dim, heads, head_dim),
                   lambda w: w.reshape(dim, heads * head_dim).T),
      # [dim, heads * head_dim] <-> [heads, head_dim, dim]
      "heads_out": (lambda w: w.T.reshape(heads, head_dim, dim),
                    lambda w: w.reshape(heads * head_dim, dim).T),
  }


def to_numpy_view(value) -> np.ndarray:
  """A torch tensor or array as numpy without copying; bf16 stays bf16 (ml_dtypes)."""
  if hasattr(value, "detach"):
    import torch  # pylint: disable=g-import-not-at-top
    tensor = value.detach().cpu()
    if tensor.dtype == torch.bfloat16:
      return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
  return np.asarray(value)


def umt5_params_from_torch(state_dict: dict[str, Any], encoder_config) -> dict[str, Any]:
  """Maps an official umT5 encoder state dict onto the params of `build_umt5(encoder_config)`.

  Args:
    state_dict: {official key: torch tensor or numpy array} (Wan-format keys, see the module
      docstring); bf16 tensors are read without a float32 detour.
    encoder_config: the encoder config; its `dtype` is the dtype of the returned params and
      `scan_layers` their layout.

  Returns:
    The params tree (numpy arrays; views of `state_dict` wherever no cast or stack is needed).

  Raises:
    CheckpointMismatchError: listing every missing, unexpected and mis-shaped key at once.
  """
  cfg = umt5.encoder_kwargs(encoder_config)
  views = {k: to_numpy_view(v) for k, v in state_dict.items()}
  mapper = common.KeyMapper(views, context="umT5 encoder", dtype=cfg["dtype"])
  params: dict[str, Any] = {
      "token_embedding": mapper.take("token_embedding.weight", (cfg["vocab_size"], cfg["dim"]))}
  shapes, layouts = _torch_shapes(cfg), _layouts(cfg)
  layers = []
  for i in range(cfg["num_layers"]):
    layer: dict[str, Any] = {}
    for suffix, path, kind in _LAYER_WEIGHTS:
      value = mapper.take(f"blocks.{i}.{suffix}", shapes[suffix], layouts[kind][0])
      common.set_in(layer, path, value)
    layers.append(layer)
  params["norm"] = {"scale": mapper.take("norm.weight", (cfg["dim"],))}
  mapper.finish()
  if cfg["scan_layers"]:
    params["layers"] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
  else:
    params.update({f"layer_{i}": layer for i, layer in enumerate(layers)})
  return params


def umt5_params_to_torch(params: dict[str, Any], encoder_config) -> dict[str, np.ndarray]:
  """The inverse of `umt5_params_from_torch`: {official key: numpy array [torch layout]}."""
  cfg = umt5.encoder_kwargs(encoder_config)
  params = jax.tree.map(np.asarray, params)
  if "layers" in params:
    layers = [jax.tree.map(lambda x, i=i: x[i], params["layers"])
              for i in range(cfg["num_layers"])]
  else:
    layers = [params[f"layer_{i}"] for i in range(cfg["num_layers"])]
  layouts = _layouts(cfg)
  out = {"token_embedding.weight": params["token_embedding"]}
  for i, layer in enumerate(layers):
    for suffix, path, kind in _LAYER_WEIGHTS:
      value = layer
      for name in path:
        value = value[name]
      out[f"blocks.{i}.{suffix}"] = np.ascontiguousarray(layouts[kind][1](value))
  out["norm.weight"] = params["norm"]["scale"]
  return out


def load_state_dict_views(path: str, trust_pickle: bool = False,
                          entry: str | None = None) -> dict[str, np.ndarray]:
  """Memory-maps a .pth file and returns {key: zero-copy numpy view} in the stored dtypes."""
  torch = common.import_torch()
  try:
    ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=not trust_pickle)
  except RuntimeError as e:
    if "mmap" not in str(e):
      raise
    logging.warning("%s is not in torch's zip format, so it cannot be memory-mapped; reading "
                    "it whole (%s).", path, e)
    ckpt = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
  except Exception as e:  # torch raises UnpicklingError for pickled objects.
    raise ValueError(f"{path!r} could not be read with torch's safe loader ({type(e).__name__}: "
                     f"{e}). If it is a trusted file that pickles Python objects, pass "
                     "--trust_pickle.") from e
  if entry is not None:
    if entry not in ckpt:
      raise KeyError(f"{path!r} has no entry {entry!r}; it has {sorted(map(str, ckpt))}.")
    ckpt = ckpt[entry]
  if not isinstance(ckpt, dict) or not ckpt:
    raise ValueError(f"{path!r} holds a {type(ckpt).__name__}, not a state dict of tensors.")
  return {k: to_numpy_view(v) for k, v in ckpt.items() if hasattr(v, "detach")}


def _tokenizer_dir(folder: str) -> str | None:
  for candidate in (os.path.join(folder, "umt5-xxl"), folder):
    if any(os.path.isfile(os.path.join(candidate, f)) for f in TOKENIZER_FILES):
      return candidate
  return None


def _hub_folder(src: str) -> str:
  """hf://ORG/REPO/FOLDER -> a local snapshot of FOLDER (clear error offline)."""
  parts = src[len(common.HF_PREFIX):].strip("/").split("/")
  if len(parts) < 3:
    raise ValueError(f"{src!r}: expected hf://ORG/REPO/FOLDER (e.g. "
                     "hf://bytedance-research/GRN/umt5-xxl).")
  repo, folder = "/".join(parts[:2]), "/".join(parts[2:])
  manual = HUB_MANUAL.format(repo=repo, folder=folder)
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"fetching {src!r} needs huggingface_hub (pip install "
                      f"'grn_jax[hub]'). {manual}") from e
  try:
    snapshot = huggingface_hub.snapshot_download(repo, allow_patterns=[f"{folder}/**"])
  except Exception as e:  # network, auth, missing files: all end the same way for the user.
    raise OSError(f"could not fetch {src!r} from the Hugging Face hub ({type(e).__name__}: "
                  f"{e}). {manual}") from e
  return os.path.join(snapshot, folder)


def resolve_source(src: str) -> tuple[str, str]:
  """(weights .pth path, tokenizer folder) of a hub folder, a local folder or a .pth file."""
  if src.startswith(common.HF_PREFIX) and src.endswith(".pth"):
    weights = common.resolve_path(src)
    folder = os.path.dirname(weights)
  else:
    folder = _hub_folder(src) if src.startswith(common.HF_PREFIX) else src
    if not os.path.exists(folder):
      raise FileNotFoundError(f"{folder!r} does not exist; pass the umt5-xxl folder (weights "
                              f"{WEIGHTS_FILE} and tokenizer files) or the .pth file.")
    if os.path.isdir(folder):
      weights = os.path.join(folder, WEIGHTS_FILE)
      if not os.path.isfile(weights):
        found = sorted(f for f in os.listdir(folder) if f.endswith(".pth"))
        if len(found) != 1:
          raise FileNotFoundError(f"{folder!r} has no {WEIGHTS_FILE} (.pth files there: "
                                  f"{found}); pass the weights file itself as --src.")
        weights = os.path.join(folder, found[0])
    else:
      weights, folder = folder, os.path.dirname(folder)
  tokenizer = _tokenizer_dir(folder)
  if tokenizer is None:
    raise FileNotFoundError(f"no tokenizer files ({' or '.join(TOKENIZER_FILES)}) in {folder!r} "
                            "or its umt5-xxl/ sub-folder: the converted directory must hold the "
                            "tokenizer too. Copy them there from the hub's umt5-xxl/ folder.")
  return weights, tokenizer


class MappedFile:
  """Where this process memory-maps a file, to hand pages already written back to the OS.

  A memory-mapped weight file that is read front to back would otherwise stay resident (as
  clean file pages) until the end. `release(array)` drops the pages under an array that lies
  in a private mapping of the file (Linux `madvise(MADV_DONTNEED)`: a later read faults them
  in again from the file, so no data changes); arrays anywhere else are left alone.
  """

  MADV_DONTNEED = 4

  def __init__(self, path: str):
    self.ranges = []
    real = os.path.realpath(path)
    if not os.path.exists("/proc/self/maps"):
      return
    with open("/proc/self/maps") as maps:
      for line in maps:
        fields = line.split(maxsplit=5)
        # Only private ('p') mappings: dropping their unwritten pages re-reads the file.
        if len(fields) == 6 and fields[5].strip() == real and fields[1].endswith("p"):
          start, end = (int(x, 16) for x in fields[0].split("-"))
          self.ranges.append((start, end))
    self.page = os.sysconf("SC_PAGE_SIZE")

  def release(self, array: np.ndarray) -> None:
    if not self.ranges or array.size == 0:
      return
    low, high = np.lib.array_utils.byte_bounds(array)
    for start, end in self.ranges:
      if start <= low and high <= end:
        first = low - low % self.page
        last = min(end, -(-high // self.page) * self.page)
        ctypes.CDLL(None, use_errno=True).madvise(ctypes.c_void_p(first),
                                                  ctypes.c_size_t(last - first),
                                                  self.MADV_DONTNEED)
        return


def save_params_streaming(path: str, params,
                          after_write: Callable[[np.ndarray], None] | None = None) -> None:
  """Orbax {'params': params} checkpoint at `path`, written one array at a time.

  Orbax's numpy handler deep-copies every host array before writing and then writes them all
  at once, which holds a second copy of the model in host memory (for the XXL encoder 11 GB
  of bf16). Here the arrays (memory-mapped views) are written as they are, each write
  awaited before the next starts, and `after_write(array)` is called once it is on disk.
  The result is an ordinary params checkpoint (`grn_jax.checkpointing.restore_params`).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  class SequentialNumpyHandler(ocp.type_handlers.NumpyHandler):
    """NumpyHandler without the defensive copy, writing its arrays one after the other."""

    async def _background_serialize(self, values, infos, args=None):
      for value, info, arg in zip(values, infos, args):
        await super()._background_serialize([value], [info], [arg])
        if after_write is not None:
          after_write(value)

  path = epath.Path(path).absolute()
  if path.exists():
    raise FileExistsError(f"{path} already exists; choose a new directory for the params.")
  handlers = [(ty, SequentialNumpyHandler(deepcopy_host_arrays=False) if ty is np.ndarray
                  else ocp.type_handlers.get_type_handler(ty))
              for ty in ocp.type_handlers.supported_types()]
  registry = ocp.type_handlers.create_type_handler_registry(*handlers)
  # Plain zarr (no OCDBT): OCDBT keeps an array's encoded chunks in memory until it commits.
  handler = ocp.PyTreeCheckpointHandler(type_handler_registry=registry, use_ocdbt=False)
  checkpointer = ocp.Checkpointer(handler)
  item = {"params": params}
  # Chunked arrays: tensorstore then encodes (and buffers) one chunk at a time.
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=SAVE_CHUNK_BYTES), item)
  checkpointer.save(path, args=ocp.args.PyTreeSave(item, save_args=save_args))


def convert_umt5(src: str, dst: str, encoder_config, trust_pickle: bool = False,
                 entry: str | None = None) -> dict[str, Any]:
  """Converts the released encoder at `src` into `dst/params` and copies its tokenizer files
  into `dst/tokenizer`. Returns the params (numpy, views of the memory-mapped file)."""
  weights, tokenizer = resolve_source(src)
  if os.path.exists(dst):
    raise FileExistsError(f"{dst} already exists; choose a new directory.")
  state_dict = load_state_dict_views(weights, trust_pickle=trust_pickle, entry=entry)
  params = umt5_params_from_torch(state_dict, encoder_config)
  save_params_streaming(os.path.join(dst, "params"), params,
                        after_write=MappedFile(weights).release)
  os.makedirs(os.path.join(dst, "tokenizer"))
  for name in TOKENIZER_FILES + TOKENIZER_EXTRAS:
    if os.path.isfile(os.path.join(tokenizer, name)):
      shutil.copy2(os.path.join(tokenizer, name), os.path.join(dst, "tokenizer", name))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  print(f"wrote umt5 params ({count:,} parameters, {len(state_dict)} tensors) to "
        f"{dst}/params and the tokenizer files of {tokenizer} to {dst}/tokenizer")
  return params
