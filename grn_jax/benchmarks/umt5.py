r"""umT5 text encoder on CPU: forward time and peak memory, ours and the official module.

  python -m grn_jax.benchmarks.umt5 --num_layers=4                   # ours, bf16 and float32
  python -m grn_jax.benchmarks.umt5 --num_layers=4 --official=/path/to/MGenAI/GRN
  python -m grn_jax.benchmarks.umt5 --convert --num_layers=5         # converter peak RSS

Both encoders get the same synthetic weights (the XXL sizes, official init scales, norms away
from 1) and the same batch of prompts padded to --seq_len. The XXL encoder has 24 layers and
5.7B parameters (11 GB in bf16, 23 GB in float32); --num_layers keeps the first N layers so
that it fits the machine (the table says how many ran). Every row runs in its own process, so
its peak RSS is its own; compilation is timed apart from the steady state (median of
--repeats). The official module is imported from the given checkout with its CUDA-only import
and its unused tokenizer dependencies neutralised; PyTorch (CPU) is needed.

--convert writes a synthetic bf16 state dict in the official layout with --num_layers layers
(5 layers: 2.0B parameters, 3.75 GiB) to --workdir, converts it with `python -m
grn_jax.convert --kind=umt5` in a child process and prints that process's peak RSS.
"""

import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types

from absl import app
from absl import flags
import ml_dtypes
import numpy as np

from configs import umt5 as umt5_configs
from grn_jax.benchmarks import timing

_NUM_LAYERS = flags.DEFINE_integer("num_layers", 4, "Encoder layers to run (XXL has 24).")
_VOCAB = flags.DEFINE_integer("vocab_size", 256384, "Vocabulary rows (XXL: 256384; fewer only "
                              "to try the benchmark out small).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 512, "Padded prompt length.")
_BATCH = flags.DEFINE_integer("batch", 1, "Prompts per forward.")
_DTYPES = flags.DEFINE_list("dtypes", ["bfloat16", "float32"], "Weight and compute dtypes.")
_OFFICIAL = flags.DEFINE_string("official", None, "Path to the official GRN repository.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs after the compile/warm-up run.")
_CONVERT = flags.DEFINE_bool("convert", False, "Measure the converter instead of the forward.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Scratch folder (default: a temporary one, "
                               "deleted at the end).")
_ROW = flags.DEFINE_string("row", None, "Internal: run one 'impl:dtype' row, or write the "
                           "synthetic release ('write:FOLDER'), in this process.")


def encoder_config(num_layers: int, dtype: str):
  cfg = umt5_configs.text_encoder_config("xxl")
  cfg.num_layers, cfg.dtype, cfg.vocab_size = num_layers, dtype, _VOCAB.value
  return cfg


def synthetic_state_dict(cfg, seed: int = 0) -> dict[str, np.ndarray]:
  """Official-layout weights in cfg.dtype (numpy; bf16 as ml_dtypes), official init scales."""
  rng = np.random.default_rng(seed)
  dtype = np.dtype(ml_dtypes.bfloat16) if cfg.dtype == "bfloat16" else np.dtype(np.float32)

  def normal(shape, std, mean=0.0):
    out = np.empty(shape, dtype)
    step = max(1, (1 << 24) // int(np.prod(shape[1:], dtype=np.int64)))
    for start in range(0, shape[0], step):  # in blocks: no float32 copy of a large tensor
      block = out[start:start + step]
      block[...] = mean + std * rng.standard_normal(block.shape, np.float32)
    return out
  dim, attn, ffn, heads = cfg.dim, cfg.dim_attn, cfg.dim_ffn, cfg.num_heads
  sd = {"token_embedding.weight": normal((cfg.vocab_size, dim), 1.0)}
  for i in range(cfg.num_layers):
    p = f"blocks.{i}."
    sd[p + "norm1.weight"] = normal((dim,), 0.1, 1.0)
    sd[p + "attn.q.weight"] = normal((attn, dim), (dim * attn) ** -0.5)
    sd[p + "attn.k.weight"] = normal((attn, dim), dim ** -0.5)
    sd[p + "attn.v.weight"] = normal((attn, dim), dim ** -0.5)
    sd[p + "attn.o.weight"] = normal((dim, attn), (heads * attn) ** -0.5)
    sd[p + "norm2.weight"] = normal((dim,), 0.1, 1.0)
    sd[p + "ffn.gate.0.weight"] = normal((ffn, dim), dim ** -0.5)
    sd[p + "ffn.fc1.weight"] = normal((ffn, dim), dim ** -0.5)
    sd[p + "ffn.fc2.weight"] = normal((dim, ffn), ffn ** -0.5)
    sd[p + "pos_embedding.embedding.weight"] = normal((cfg.num_buckets, heads),
                                                      (2 * cfg.num_buckets * heads) ** -0.5)
  sd["norm.weight"] = normal((dim,), 0.1, 1.0)
  return sd


def prompt_batch(cfg, batch: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """ids int32 [batch, seq_len] and mask int32; prompt lengths spread over the padded length."""
  rng = np.random.default_rng(1)
  lengths = np.linspace(seq_len // 4, seq_len * 3 // 4, batch).astype(int)
  mask = (np.arange(seq_len)[None] < lengths[:, None]).astype(np.int32)
  ids = rng.integers(1, cfg.vocab_size, (batch, seq_len)).astype(np.int32) * mask
  return ids, mask


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(max(repeats, 1)):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def run_ours(cfg, sd, ids, mask, repeats: int) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from grn_jax.convert.umt5 import umt5_params_from_torch  # pylint: disable=g-import-not-at-top
  from grn_jax.models import build_umt5  # pylint: disable=g-import-not-at-top
  leaves, treedef = jax.tree.flatten(umt5_params_from_torch(sd, cfg))
  sd.clear()
  for i, leaf in enumerate(leaves):  # one tensor at a time: no second copy of the model
    leaves[i] = jax.device_put(leaf)
  params = jax.tree.unflatten(treedef, leaves)
  del leaves
  enc = build_umt5(cfg)
  start = time.perf_counter()
  forward = jax.jit(enc.apply).lower({"params": params}, ids, mask).compile()
  out = jax.block_until_ready(forward({"params": params}, ids, mask))
  compile_s = time.perf_counter() - start
  seconds = _median_seconds(
      lambda: jax.block_until_ready(forward({"params": params}, ids, mask)), repeats)
  temp = forward.memory_analysis().temp_size_in_bytes
  return dict(seconds=seconds, compile=compile_s, temp_gib=temp / 2**30, out=np.asarray(out))


def import_official_t5(repo: str):
  """`grn/models/umt5/t5.py` of an official checkout, imported on a CPU-only machine."""
  if not os.path.isfile(os.path.join(repo, "grn", "models", "umt5", "t5.py")):
    raise FileNotFoundError(f"--official={repo!r} is not a checkout of the official GRN "
                            "repository (no grn/models/umt5/t5.py).")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("--official needs PyTorch (pip install torch, CPU build).") from e
  # Its tokenizer module (imported by t5.py, never called here) needs these at import time.
  for name, attrs in (("ftfy", {}), ("regex", {}), ("transformers", {"AutoTokenizer": None})):
    if importlib.util.find_spec(name) is None:
      sys.modules[name] = types.ModuleType(name)
      sys.modules[name].__dict__.update(attrs)
  sys.path.insert(0, repo)
  current_device = torch.cuda.current_device
  torch.cuda.current_device = lambda: "cpu"  # evaluated as a default argument at import
  try:
    return importlib.import_module("grn.models.umt5.t5")
  finally:
    torch.cuda.current_device = current_device


def run_official(repo: str, cfg, sd, ids, mask, repeats: int) -> dict:
  t5 = import_official_t5(repo)
  import torch  # pylint: disable=g-import-not-at-top
  with torch.device("meta"):
    model = t5.T5Encoder(cfg.vocab_size, cfg.dim, cfg.dim_attn, cfg.dim_ffn, cfg.num_heads,
                         cfg.num_layers, cfg.num_buckets, shared_pos=False)
  tensors = {k: (torch.from_numpy(v.view(np.int16)).view(torch.bfloat16)
                 if v.dtype == ml_dtypes.bfloat16 else torch.from_numpy(v))
             for k, v in sd.items()}
  model.load_state_dict(tensors, assign=True)  # the arrays themselves, no copy
  model.eval()
  ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask)
  with torch.inference_mode():
    start = time.perf_counter()
    out = model(ids_t, mask_t)
    warm_up = time.perf_counter() - start
    seconds = _median_seconds(lambda: model(ids_t, mask_t), repeats)
  return dict(seconds=seconds, compile=warm_up, temp_gib=float("nan"),
              out=out.float().numpy())


def run_row(row: str, workdir: str) -> dict:
  impl, dtype = row.split(":")
  cfg = encoder_config(_NUM_LAYERS.value, dtype)
  sd = synthetic_state_dict(cfg)
  params = sum(v.size for v in sd.values())
  ids, mask = prompt_batch(cfg, _BATCH.value, _SEQ_LEN.value)
  if impl == "grn_jax":
    result = run_ours(cfg, sd, ids, mask, _REPEATS.value)
  else:
    result = run_official(_OFFICIAL.value, cfg, sd, ids, mask, _REPEATS.value)
  np.save(os.path.join(workdir, f"{impl}_{dtype}.npy"), result.pop("out"))
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  return dict(result, impl=impl, dtype=dtype, params=int(params), peak_gib=peak)


def _child(args: list[str]) -> tuple[str, float]:
  """Runs a command; (its stdout, its own peak RSS in GiB). Its log is shown if it fails."""
  with tempfile.TemporaryFile("w+") as log:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
      log.seek(0)
      raise RuntimeError(f"{' '.join(args)} failed:\n{stdout}{log.read()[-5000:]}")
  return stdout, usage.ru_maxrss / 2**20


def run_table(workdir: str) -> None:
  impls = ["grn_jax"] + (["official"] if _OFFICIAL.value else [])
  vocab = "" if _VOCAB.value == 256384 else f", vocabulary cut to {_VOCAB.value}"
  print(f"umT5-XXL encoder, {_NUM_LAYERS.value} of 24 layers{vocab}, batch {_BATCH.value} x "
        f"{_SEQ_LEN.value} tokens, CPU; one process per row")
  print(f"{'row':<22}{'params':>8}{'compile s':>11}{'forward s':>11}{'tokens/s':>10}"
        f"{'XLA temp GiB':>14}{'peak RSS GiB':>14}{'max|diff| (rel)':>19}")
  flag_args = [f"--num_layers={_NUM_LAYERS.value}", f"--vocab_size={_VOCAB.value}",
               f"--seq_len={_SEQ_LEN.value}",
               f"--batch={_BATCH.value}", f"--repeats={_REPEATS.value}",
               f"--official={_OFFICIAL.value or ''}", f"--workdir={workdir}"]
  for dtype in _DTYPES.value:
    for impl in impls:
      stdout, _ = _child([sys.executable, "-m", "grn_jax.benchmarks.umt5", f"--row={impl}:{dtype}",
                          *flag_args])
      r = json.loads(stdout.strip().splitlines()[-1])
      diff = "-"
      if impl == "official":
        ours = np.load(os.path.join(workdir, f"grn_jax_{dtype}.npy"))
        theirs = np.load(os.path.join(workdir, f"official_{dtype}.npy"))
        valid = prompt_batch(encoder_config(1, dtype), _BATCH.value, _SEQ_LEN.value)[1] > 0
        worst = np.abs(ours - theirs)[valid].max()
        diff = f"{worst:.1e} ({worst / np.abs(theirs)[valid].max():.0e})"
      print(f"{impl + ' ' + dtype:<22}{r['params'] / 1e9:>7.2f}B{r['compile']:>11.1f}"
            f"{r['seconds']:>11.2f}{_BATCH.value * _SEQ_LEN.value / r['seconds']:>10.0f}"
            f"{r['temp_gib']:>14.2f}{r['peak_gib']:>14.2f}{diff:>19}", flush=True)
  print("official compile s = its first (warm-up) call; diff: ours vs official on the valid "
        "rows (relative to the official's largest output)")


def write_synthetic_release(folder: str) -> int:
  """A released-style umt5-xxl folder (bf16 .pth + a 3-token tokenizer.json); its params."""
  import torch  # pylint: disable=g-import-not-at-top
  from tokenizers import Tokenizer, models  # pylint: disable=g-import-not-at-top
  cfg = encoder_config(_NUM_LAYERS.value, "bfloat16")
  os.makedirs(folder)
  sd = synthetic_state_dict(cfg)
  torch.save({k: torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) for k, v in sd.items()},
             os.path.join(folder, "models_t5_umt5-xxl-enc-bf16.pth"))
  vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
  Tokenizer(models.Unigram(vocab, unk_id=2)).save(os.path.join(folder, "tokenizer.json"))
  return sum(v.size for v in sd.values())


def run_convert(workdir: str) -> None:
  # The file is written by one child and converted by another: a child's peak RSS includes
  # what its parent held when it was started, so this process stays small.
  src = os.path.join(workdir, "umt5-xxl")
  stdout, _ = _child([sys.executable, "-m", "grn_jax.benchmarks.umt5", f"--row=write:{src}",
                      f"--num_layers={_NUM_LAYERS.value}", f"--vocab_size={_VOCAB.value}"])
  params = json.loads(stdout.strip().splitlines()[-1])["params"]
  start = time.perf_counter()
  _, peak = _child([sys.executable, "-m", "grn_jax.convert", "--kind=umt5", f"--src={src}",
                    f"--dst={os.path.join(workdir, 'converted')}",
                    f"--config={umt5_configs.__file__}:variant=xxl",
                    f"--config.text_encoder.num_layers={_NUM_LAYERS.value}",
                    f"--config.text_encoder.vocab_size={_VOCAB.value}"])
  seconds = time.perf_counter() - start
  size = os.path.getsize(os.path.join(src, "models_t5_umt5-xxl-enc-bf16.pth")) / 2**30
  print(f"converted {params / 1e9:.2f}B bf16 parameters ({_NUM_LAYERS.value} layers, "
        f"{size:.2f} GiB file) in {seconds:.0f} s; converter peak RSS {peak:.2f} GiB")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if _ROW.value and _ROW.value.startswith("write:"):
    print(json.dumps(dict(params=int(write_synthetic_release(_ROW.value[len("write:"):])))))
    return
  if _ROW.value:
    print(json.dumps(run_row(_ROW.value, _WORKDIR.value)))
    return
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="umt5_bench_")
  try:
    if _CONVERT.value:
      run_convert(workdir)
    else:
      run_table(workdir)
  finally:
    if not _WORKDIR.value:
      shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  timing.run(lambda: None, main)
