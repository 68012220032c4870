"""Reading released PyTorch checkpoints and mapping their keys, with all-keys-listed errors.

torch and huggingface_hub are optional extras (`pip install grn_jax[torch,hub]`): they are
imported only here, only when a .pth/.ckpt file is read or fetched.
"""

import os
import pickle
import zipfile
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import numpy as np

HF_PREFIX = "hf://"

# Preferred weights inside each kind of released file (GRN-SPEC §I).
C2I_ENTRIES = ("model_ema1", "model", "model_ema2")
TOKENIZER_ENTRIES = ("ema", "vae")


class CheckpointMismatchError(ValueError):
  """A state dict does not match the model: lists every missing, unexpected or mis-shaped key."""

  def __init__(self, missing=(), unexpected=(), misshaped=(), context: str = ""):
    self.missing, self.unexpected, self.misshaped = list(missing), list(unexpected), list(misshaped)
    lines = [f"checkpoint does not match the model{f' ({context})' if context else ''}:"]
    if self.missing:
      lines.append(f"  {len(self.missing)} missing keys: " + ", ".join(self.missing))
    if self.unexpected:
      lines.append(f"  {len(self.unexpected)} unexpected keys: " + ", ".join(self.unexpected))
    for key, got, want in self.misshaped:
      lines.append(f"  mis-shaped {key}: checkpoint {tuple(got)}, model expects {tuple(want)}")
    lines.append("Check that the config (variant, label_mode, latent_dim, ...) matches the file.")
    super().__init__("\n".join(lines))


class DamagedCheckpointError(ValueError):
  """A checkpoint file is empty, truncated, corrupt or not a PyTorch checkpoint at all."""


def check_torch_file(local: str, name: str) -> None:
  """Raises DamagedCheckpointError unless `local` is an intact PyTorch checkpoint container.

  The zip format of torch.save (torch >= 1.6) is checked member by member against its CRCs
  (this reads the whole file once); a legacy (pickle) file is only checked for its first byte.
  """
  size = os.path.getsize(local)
  redo = "download it again (or re-export it) and retry"
  if size == 0:
    raise DamagedCheckpointError(f"{name!r} is empty (0 bytes): an unfinished download or copy; "
                                 f"{redo}.")
  with open(local, "rb") as f:
    head = f.read(4)
  if head.startswith(b"PK"):
    try:
      with zipfile.ZipFile(local) as zf:
        bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
      raise DamagedCheckpointError(
          f"{name!r} ({size} bytes) is a truncated or damaged PyTorch checkpoint ({e}); "
          f"{redo}.") from e
    if bad is not None:
      raise DamagedCheckpointError(f"{name!r} is corrupt: its member {bad!r} fails the CRC "
                                   f"check; {redo}.")
  elif not head.startswith(b"\x80"):  # the pickle protocol byte of legacy torch files
    raise DamagedCheckpointError(
        f"{name!r} is not a PyTorch checkpoint (it starts with the bytes {head!r}, neither a "
        f"torch zip archive nor a pickle); check the path, or {redo}.")


def resolve_path(src: str, cache_dir: str | None = None) -> str:
  """A local path, or `hf://org/repo/file` fetched with huggingface_hub (clear error offline)."""
  if not src.startswith(HF_PREFIX):
    if not os.path.exists(src):
      raise FileNotFoundError(f"checkpoint file {src!r} does not exist.")
    return src
  parts = src[len(HF_PREFIX):].split("/")
  if len(parts) < 3:
    raise ValueError(f"{src!r}: expected hf://ORG/REPO/FILENAME.")
  repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
  manual = (f"Download it by hand, e.g. `huggingface-cli download {repo_id} {filename} "
            f"--local-dir weights/` (or from https://huggingface.co/{repo_id}), then pass "
            f"the local path instead of {src!r}.")
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"fetching {src!r} needs huggingface_hub (pip install "
                      f"'grn_jax[hub]'). {manual}") from e
  try:
    return huggingface_hub.hf_hub_download(repo_id, filename, cache_dir=cache_dir)
  except Exception as e:  # network, auth, missing file: all end the same way for the user.
    raise OSError(f"could not fetch {src!r} from the Hugging Face hub ({type(e).__name__}: "
                  f"{e}). {manual}") from e


def import_torch():
  """The torch module (the `torch` extra), or an ImportError saying how to install it."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading .pth/.ckpt files needs PyTorch: pip install 'grn_jax[torch]' "
                      "(a CPU build is enough).") from e
  return torch


def load_torch_checkpoint(path: str, entry: str | None = None, trust_pickle: bool = False,
                          kind: str | None = None) -> dict[str, np.ndarray]:
  """Reads a released .pth/.ckpt file into {key: float32 numpy array}.

  Args:
    path: local file or hf://ORG/REPO/FILE.
    entry: which sub-dict holds the weights; by default `model_ema1` (C2I files: the EMA the
      official evaluation samples with), else `ema` then `vae` (tokenizer files), else the file
      itself when it is a flat state dict.
    trust_pickle: the C2I file pickles an argparse Namespace, so it can only be read with a full
      (unsafe) unpickle. Only pass True for files you trust.
    kind: 'c2i' or 'tokenizer' restricts the default entries to that kind of file; 't2iv'
      files are flat state dicts.
  """
  torch = import_torch()
  local = resolve_path(path)
  check_torch_file(local, path)
  try:
    ckpt = torch.load(local, map_location="cpu", weights_only=not trust_pickle)
  except pickle.UnpicklingError as e:
    if not trust_pickle and "weights only" in str(e).lower():  # intact, but needs full unpickle
      raise ValueError(
          f"{path!r} contains pickled Python objects (the released C2I file stores an argparse "
          f"Namespace) and cannot be read with torch's safe loader. If you trust the file, pass "
          f"trust_pickle=True (CLI: --trust_pickle).") from e
    raise DamagedCheckpointError(f"{path!r} is corrupt (its pickle does not load: {e}); "
                                 "download it again and retry.") from e
  except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
    raise DamagedCheckpointError(f"{path!r} is truncated or corrupt ({type(e).__name__}: {e}); "
                                 "download it again and retry.") from e
  return _pick_entry(ckpt, entry, kind, path)


def _pick_entry(ckpt: Any, entry: str | None, kind: str | None, path: str):
  if not isinstance(ckpt, dict):
    raise ValueError(f"{path!r} holds a {type(ckpt).__name__}, not a state dict.")
  if entry is None:
    candidates = {"c2i": C2I_ENTRIES, "tokenizer": TOKENIZER_ENTRIES, "t2iv": ()}.get(
        kind, C2I_ENTRIES[:1] + TOKENIZER_ENTRIES)
    entry = next((c for c in candidates if c in ckpt), None)
  if entry is not None:
    if entry not in ckpt:
      raise KeyError(f"{path!r} has no entry {entry!r}; it has {sorted(map(str, ckpt))}.")
    ckpt = ckpt[entry]
  out = {}
  for key, value in ckpt.items():
    if hasattr(value, "detach"):
      out[key] = value.detach().cpu().float().numpy()
    elif isinstance(value, np.ndarray):
      out[key] = value.astype(np.float32)
  if not out:
    raise ValueError(f"{path!r} (entry {entry!r}) holds no tensors.")
  return out


class KeyMapper:
  """Consumes a state dict key by key; `finish()` raises one error listing every problem."""

  def __init__(self, state_dict: dict[str, np.ndarray], prefix: str = "", context: str = "",
               dtype: Any = np.float32):
    """`dtype`: what `take` returns (a tensor already of that dtype is not copied)."""
    self.state_dict = state_dict
    self.prefix = prefix
    self.context = context
    self.dtype = dtype
    self.used: set[str] = set()
    self.missing: list[str] = []
    self.misshaped: list[tuple[str, tuple, tuple]] = []

  def take(self, key: str, shape: tuple[int, ...],
           transform: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> np.ndarray | None:
    """The tensor at `prefix + key`, checked against its PyTorch `shape`, then `transform`ed."""
    full = self.prefix + key
    if full not in self.state_dict:
      self.missing.append(full)
      return None
    self.used.add(full)
    value = self.state_dict[full]
    if hasattr(value, "detach") and np.dtype(self.dtype) == np.float32:
      value = value.detach().cpu().float().numpy()  # a torch tensor of any dtype, maybe with grad
    value = np.asarray(value, self.dtype)
    if tuple(value.shape) != tuple(shape):
      self.misshaped.append((full, value.shape, shape))
      return None
    return transform(value)

  def finish(self) -> None:
    unexpected = sorted(set(self.state_dict) - self.used)
    if self.missing or unexpected or self.misshaped:
      raise CheckpointMismatchError(self.missing, unexpected, self.misshaped, self.context)


def strip_prefix(state_dict: dict[str, Any], prefix: str) -> dict[str, Any]:
  """Drops `prefix` from keys that carry it (e.g. the optional `net.` of C2I files)."""
  if state_dict and all(k.startswith(prefix) for k in state_dict):
    return {k[len(prefix):]: v for k, v in state_dict.items()}
  return dict(state_dict)


def set_in(tree: dict, path: tuple[str, ...], value) -> None:
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


class Entry(NamedTuple):
  """One official tensor: its key and PyTorch shape, our parameter path, both layout changes."""
  torch_key: str
  torch_shape: tuple[int, ...]
  path: tuple[str, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]
  to_torch: Callable[[np.ndarray], np.ndarray]


def linear(key: str, path: tuple[str, ...], n_in: int, out_shape: Sequence[int],
           in_shape: Sequence[int] | None = None, bias: bool = True) -> list[Entry]:
  """Linear [out, in] <-> kernel [*in_shape, *out_shape] (and bias [*out_shape])."""
  in_shape, out_shape = tuple(in_shape or (n_in,)), tuple(out_shape)
  n_out = int(np.prod(out_shape))
  entries = [Entry(f"{key}.weight", (n_out, n_in), path + ("kernel",),
                   lambda a: a.T.reshape(*in_shape, *out_shape),
                   lambda a: a.reshape(n_in, n_out).T)]
  if bias:
    entries.append(Entry(f"{key}.bias", (n_out,), path + ("bias",),
                         lambda a: a.reshape(out_shape), lambda a: a.reshape(n_out)))
  return entries


def identity(key: str, shape: Sequence[int], path: tuple[str, ...]) -> Entry:
  return Entry(key, tuple(shape), path, lambda a: a, lambda a: a)


def params_from_table(state_dict: dict[str, Any], table: Sequence[Entry], context: str = "",
                      stacks: Sequence[str] = ()) -> dict:
  """Our nested params (numpy float32) from a state dict; one error lists every problem.

  `stacks` names the block stacks to put into the nn.scan layout (`stack_blocks`).
  """
  mapper = KeyMapper(state_dict, context=context)
  params: dict = {}
  for entry in table:
    value = mapper.take(entry.torch_key, entry.torch_shape, entry.to_flax)
    if value is not None:
      set_in(params, entry.path, np.ascontiguousarray(value, np.float32))
  mapper.finish()
  for stack in stacks:
    stack_blocks(params, stack)
  return params


def params_to_table(params: dict, table: Sequence[Entry], prefix: str = "",
                    stacks: Sequence[str] = ()) -> dict[str, np.ndarray]:
  """The inverse of `params_from_table` -> {prefix + key: array}; `stacks` are unstacked
  first where they are in the nn.scan layout (the caller's tree is not changed)."""
  params = dict(params)
  for stack in stacks:
    unstack_blocks(params, stack)
  out = {}
  for entry in table:
    node = params
    for name in entry.path:
      node = node[name]
    out[prefix + entry.torch_key] = np.ascontiguousarray(entry.to_torch(np.asarray(node)))
  return out


def unboxed_numpy(params: dict) -> dict:
  """A (possibly boxed, device) params tree as a mutable dict of numpy arrays."""
  return jax.tree.map(np.asarray, dict(nn.unbox(params)))


def stack_blocks(params: dict, stack: str) -> None:
  """params[stack] = {block_0, block_1, ...} -> {'layers': leaves stacked} (nn.scan layout)."""
  blocks = params.get(stack)
  if blocks is None:
    return
  ordered = [blocks[f"block_{i}"] for i in range(len(blocks))]
  params[stack] = {"layers": jax.tree.map(lambda *xs: np.stack(xs), *ordered)}


def unstack_blocks(params: dict, stack: str) -> None:
  """The inverse of `stack_blocks` (no-op for unstacked params)."""
  blocks = params.get(stack)
  if blocks is None or "layers" not in blocks:
    return
  count = len(jax.tree.leaves(blocks["layers"])[0])
  params[stack] = {f"block_{i}": jax.tree.map(lambda a, i=i: np.asarray(a[i]), blocks["layers"])
                   for i in range(count)}
