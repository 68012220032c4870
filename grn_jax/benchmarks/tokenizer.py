r"""HBQ tokenizer encode/decode time and memory (random weights), optionally next to the official.

  python -m grn_jax.benchmarks.tokenizer                       # d=16 image 256^2, d=64 17x256^2
  python -m grn_jax.benchmarks.tokenizer --official=/path/to/MGenAI/GRN

The official comparison imports the official repository from the given path (PyTorch needed)
and loads the same weights. Compilation is timed separately from the steady-state run.
"""

import os
import resource
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from grn_jax.models import build_tokenizer

_OFFICIAL = flags.DEFINE_string("official", None, "Path to the official GRN repository.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs after the compile run.")
_CASES = flags.DEFINE_list("cases", ["image16", "video64"], "image16 and/or video64.")

CASES = {
    # name: (latent_dim, input shape [B, (T,) H, W, 3])
    "image16": (16, (1, 256, 256, 3)),
    "video64": (64, (1, 17, 256, 256, 3)),
}


def released_config(latent_dim: int, dtype: str = "float32") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      dim=160, dec_dim=256, latent_dim=latent_dim, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
      temporal_downsample=(False, True, True), dtype=dtype))


def _median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def time_ours(case: str, repeats: int, dtype: str = "float32"):
  """(params, input, encode s, decode s, compile s)."""
  latent_dim, shape = CASES[case]
  cfg = released_config(latent_dim, dtype)
  tok = build_tokenizer(cfg)
  x = jax.random.uniform(jax.random.key(0), shape, jnp.float32, -1, 1)
  params = jax.jit(tok.init)(jax.random.key(1), x[:, :1] if x.ndim == 5 else x)
  encode = jax.jit(lambda p, x: tok.apply(p, x, method="encode"))
  decode = jax.jit(lambda p, z: tok.apply(p, z, method="decode"))
  start = time.perf_counter()
  z = jax.block_until_ready(encode(params, x))
  jax.block_until_ready(decode(params, z))
  compile_s = time.perf_counter() - start
  enc = _median_time(lambda: encode(params, x), repeats)
  dec = _median_time(lambda: decode(params, z), repeats)
  return params, x, enc, dec, compile_s


def time_official(repo: str, case: str, params, x, repeats: int):
  os.environ["TORCH_COMPILE_DISABLE"] = "1"
  import torch  # pylint: disable=g-import-not-at-top
  torch.Tensor.cuda = lambda self, *a, **k: self
  torch.nn.Module.cuda = lambda self, *a, **k: self
  sys.path.insert(0, repo)
  from grn.models import hbq_tokenizer  # pylint: disable=g-import-not-at-top
  from grn_jax.convert.tokenizer import tokenizer_params_to_torch  # pylint: disable=g-import-not-at-top
  latent_dim, _ = CASES[case]
  net = hbq_tokenizer.HBQ_Tokenizer(None, latent_channels=latent_dim,
                                    encoder_out_type="feature_tanh").eval()
  sd = tokenizer_params_to_torch(params["params"], released_config(latent_dim))
  net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  xt = torch.from_numpy(np.asarray(x))
  xt = xt.permute(0, 4, 1, 2, 3) if xt.ndim == 5 else xt.permute(0, 3, 1, 2)[:, :, None]
  with torch.no_grad():
    def enc():
      return net.encode(xt)
    z = enc()
    enc_s = _median_time(enc, repeats)
    dec_s = _median_time(lambda: net.decode(z), repeats)
  return enc_s, dec_s, z.numpy()


def benchmark_rows(batch: int = 1, dtype: str = "float32", repeats: int = 2,
                   cases=("image16",)) -> list[dict]:
  """Rows for `python -m grn_jax.benchmarks` (batch is fixed at 1 here)."""
  del batch
  rows = []
  for case in cases:
    _, x, enc, dec, _ = time_ours(case, repeats, dtype)
    what = "image 256^2" if case == "image16" else "17x256^2 clip"
    rows.append(dict(name=f"tokenizer encode, {what} (d={CASES[case][0]})", seconds=enc,
                     items=1, unit="images" if x.ndim == 4 else "clips", flops=0.0))
    rows.append(dict(name=f"tokenizer decode, {what} (d={CASES[case][0]})", seconds=dec,
                     items=1, unit="images" if x.ndim == 4 else "clips", flops=0.0))
  return rows


def main(argv):
  del argv
  print(f"{'case':<34}{'encode s':>10}{'decode s':>10}{'compile s':>11}")
  for case in _CASES.value:
    params, x, enc, dec, compile_s = time_ours(case, _REPEATS.value)
    print(f"{'grn_jax ' + case:<34}{enc:>10.2f}{dec:>10.2f}{compile_s:>11.1f}", flush=True)
    if _OFFICIAL.value:
      off_enc, off_dec, off_z = time_official(_OFFICIAL.value, case, params, x, _REPEATS.value)
      ours_z = np.asarray(jax.jit(lambda p, x: build_tokenizer(released_config(
          CASES[case][0])).apply(p, x, method="encode"))(params, x))
      off_z = off_z.transpose(0, 2, 3, 4, 1)
      off_z = off_z[:, 0] if ours_z.ndim == 4 else off_z
      print(f"{'official ' + case:<34}{off_enc:>10.2f}{off_dec:>10.2f}{'':>11}"
            f"   max|latent diff| {np.abs(ours_z - off_z).max():.1e}", flush=True)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print(f"process peak RSS {rss:.1f} GiB")


if __name__ == "__main__":
  app.run(main)
