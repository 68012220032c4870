r"""HBQ tokenizer encode/decode time and memory (random weights), optionally next to the official.

  python -m grn_jax.benchmarks.tokenizer                       # d=16 image 256^2, d=64 17x256^2
  python -m grn_jax.benchmarks.tokenizer --cases=video64 --frame_chunk=1
  python -m grn_jax.benchmarks.tokenizer --official=/path/to/MGenAI/GRN
  python -m grn_jax.benchmarks.tokenizer --aot      # compile-only memory of the large decodes

The official comparison imports grn/models/hbq_tokenizer.py from the given checkout (PyTorch
needed, CPU is fine), loads the same weights and reports its times and the largest latent and
reconstruction differences. Compilation is timed separately from the steady-state runs (median
of --repeats). Peak RSS is the process high-water mark after each row (run one case per process
to attribute memory to it).
"""

import time

from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import tokenizer as tokenizer_configs
from grn_jax.benchmarks import official
from grn_jax.benchmarks import timing
from grn_jax.models import build_tokenizer

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (defined only when run as a program)."""
  flags.DEFINE_string("official", None, "Path to the official GRN repository.")
  flags.DEFINE_integer("repeats", 2, "Timed runs after the compile run.")
  flags.DEFINE_list("cases", ["image16", "video64"], "image16 and/or video64.")
  flags.DEFINE_integer("frame_chunk", 0, "config.tokenizer.frame_chunk (videos).")
  flags.DEFINE_string("dtype", "float32", "Compute dtype of our tokenizer.")
  flags.DEFINE_bool(
      "aot", False, "Compile (no run) the decodes of a 1024^2 image and an 81-frame 480x832 "
      "video, whole and with tiles / frame chunks, and print XLA's memory analysis of each "
      "program.")

CASES = {
    # name (a configs/tokenizer.py variant): input shape [B, (T,) H, W, 3]
    "image16": (1, 256, 256, 3),
    "video64": (1, 17, 256, 256, 3),
}


def released_config(variant: str, dtype: str = "float32",
                    frame_chunk: int = 0) -> ml_collections.ConfigDict:
  """The `tokenizer` section of a released tokenizer with our execution settings."""
  cfg = tokenizer_configs.tokenizer_config(variant)
  cfg.update(dtype=dtype, frame_chunk=frame_chunk)
  return cfg


def _time(fn, repeats: int) -> float:
  return timing.best_of(fn, repeats, warmup=0)[0]  # each fn was already called once


def time_ours(case: str, repeats: int, dtype: str = "float32", frame_chunk: int = 0) -> dict:
  """Params, input, latent, reconstruction, encode/decode seconds and compile seconds."""
  shape = CASES[case]
  tok = build_tokenizer(released_config(case, dtype, frame_chunk))
  x = jax.random.uniform(jax.random.key(0), shape, jnp.float32, -1, 1)
  init_x = jnp.zeros(shape[:1] + (1, 32, 32, 3), jnp.float32)
  params = jax.jit(tok.init)(jax.random.key(1), init_x)
  encode = jax.jit(lambda p, x: tok.apply(p, x, method="encode"))
  decode = jax.jit(lambda p, z: tok.apply(p, z, method="decode"))
  start = time.perf_counter()
  encode = encode.lower(params, x).compile()
  z = jax.block_until_ready(encode(params, x))
  decode = decode.lower(params, z).compile()
  compile_s = time.perf_counter() - start
  enc = _time(lambda: encode(params, x), repeats)
  recon = jax.block_until_ready(decode(params, z))  # (dispatch is async: finish before timing)
  dec = _time(lambda: decode(params, z), repeats)
  return dict(params=params, x=x, z=np.asarray(z), recon=np.asarray(recon), encode=enc,
              decode=dec, compile=compile_s)


def time_official(repo: str, case: str, params, x, repeats: int) -> dict:
  """Times the official HBQ_Tokenizer (PyTorch, CPU) with the same weights and input."""
  hbq_tokenizer = official.import_official(repo, "grn.models.hbq_tokenizer")
  import torch  # pylint: disable=g-import-not-at-top
  from grn_jax.convert.tokenizer import tokenizer_params_to_torch  # pylint: disable=g-import-not-at-top
  cfg = released_config(case)
  net = hbq_tokenizer.HBQ_Tokenizer(None, latent_channels=cfg.latent_dim,
                                    encoder_out_type="feature_tanh").eval()
  sd = tokenizer_params_to_torch(params["params"], cfg)
  net.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
  xt = torch.from_numpy(np.asarray(x))
  xt = xt.permute(0, 4, 1, 2, 3) if xt.ndim == 5 else xt.permute(0, 3, 1, 2)[:, :, None]
  with torch.no_grad():
    z = net.encode(xt)
    enc_s = _time(lambda: net.encode(xt), repeats)
    recon = net.decode(z)
    dec_s = _time(lambda: net.decode(z), repeats)
  z = z.numpy().transpose(0, 2, 3, 4, 1)
  recon = recon.numpy().transpose(0, 2, 3, 4, 1)
  if np.asarray(x).ndim == 4:
    z, recon = z[:, 0], recon[:, 0]
  return dict(encode=enc_s, decode=dec_s, z=z, recon=recon)


# name: (tokenizer variant, latent shape [B, (T,) h, w, d], tokenizer overrides)
AOT_CASES = {
    "image 1024^2 (d=16), whole": ("image16", (1, 64, 64, 16), {}),
    "image 1024^2 (d=16), tiles 32+8": ("image16", (1, 64, 64, 16),
                                        dict(tile_latent=32, tile_overlap=8)),
    "video 81x480x832 (d=64), whole": ("video64", (1, 21, 30, 52, 64), {}),
    "video 81x480x832 (d=64), frame_chunk=1": ("video64", (1, 21, 30, 52, 64),
                                               dict(frame_chunk=1)),
    "video 81x480x832 (d=64), chunk=1 + tiles 32+8": (
        "video64", (1, 21, 30, 52, 64), dict(frame_chunk=1, tile_latent=32, tile_overlap=8)),
}


def aot_decode_memory(variant: str, shape, dtype: str, **overrides) -> dict[str, int]:
  """Bytes of the compiled decode program (abstract params and latent: nothing is allocated)."""
  cfg = released_config(variant, dtype)
  cfg.update(overrides)
  tok = build_tokenizer(cfg)
  params = jax.eval_shape(tok.init, jax.random.key(0), jnp.zeros((1, 1, 32, 32, 3)))
  z = jax.ShapeDtypeStruct(shape, jnp.float32)
  compiled = jax.jit(lambda p, z: tok.apply(p, z, method="decode")).lower(params, z).compile()
  m = compiled.memory_analysis()
  return dict(arguments=m.argument_size_in_bytes, outputs=m.output_size_in_bytes,
              temp=m.temp_size_in_bytes)


def run_aot():
  platform = jax.devices()[0].platform
  print(f"decode programs compiled for {platform} ({FLAGS.dtype}); bytes from "
        "compiled.memory_analysis(), nothing run")
  print(f"{'case':<48}{'params+latent GiB':>18}{'output GiB':>11}{'temp GiB':>10}")
  for name, (variant, shape, overrides) in AOT_CASES.items():
    m = aot_decode_memory(variant, shape, FLAGS.dtype, **overrides)
    print(f"{name:<48}{m['arguments'] / 2**30:>18.2f}{m['outputs'] / 2**30:>11.2f}"
          f"{m['temp'] / 2**30:>10.2f}", flush=True)


def main(argv):
  del argv
  if FLAGS.aot:
    run_aot()
    return
  print(f"{'case':<32}{'encode s':>10}{'decode s':>10}{'compile s':>11}{'peak RSS GiB':>14}")
  for case in FLAGS.cases:
    r = time_ours(case, FLAGS.repeats, FLAGS.dtype, FLAGS.frame_chunk)
    label = f"grn_jax {case}" + (f" chunk={FLAGS.frame_chunk}" if FLAGS.frame_chunk else "")
    print(f"{label:<32}{r['encode']:>10.2f}{r['decode']:>10.2f}{r['compile']:>11.1f}"
          f"{timing.peak_rss_gib():>14.1f}", flush=True)
    if FLAGS.official:
      o = time_official(FLAGS.official, case, r["params"], r["x"], FLAGS.repeats)
      rel = np.abs(r["recon"] - o["recon"]).max() / np.abs(o["recon"]).max()
      print(f"{'official ' + case:<32}{o['encode']:>10.2f}{o['decode']:>10.2f}{'':>11}"
            f"{timing.peak_rss_gib():>14.1f}   max|latent diff| {np.abs(r['z'] - o['z']).max():.1e}"
            f", recon max|diff|/max|ref| {rel:.1e}", flush=True)


if __name__ == "__main__":
  timing.run(define_flags, main)
