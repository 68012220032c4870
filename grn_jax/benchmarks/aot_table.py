r"""The TPU memory table: every pod-sized program compiled by the TPU compiler for its slice.

  python -m grn_jax.benchmarks.aot_table                         # every row (about 2-3 min each)
  python -m grn_jax.benchmarks.aot_table --rows=c2i_G_train,t2v_2B_denoise
  python -m grn_jax.benchmarks.aot_table --out_dir=DIR --reuse   # print rows already in DIR

Each row is one `python -m grn_jax.aot` command (printed in the table), run one after another
in its own process (one big compile at a time); its JSON report lands in --out_dir/ROW.json and
the table is printed in Markdown (docs/aot.md holds the last one, with what had to change to fit).
A row's topology is the slice it is compiled for with its settings.
"""

import dataclasses
import json
import os
import shlex
import subprocess
import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS

# C2I training as in the official recipe (global batch 1024) in bfloat16 with scanned blocks,
# the parameters and optimizer state sharded over every chip of the slice.
_C2I = ("--config.model.dtype=bfloat16", "--config.model.scan_layers=True",
        "--config.mesh.data=1", "--config.mesh.fsdp=-1")
_BF16_T2IV = ("--config.model.dtype=bfloat16", "--config.model.scan_layers=True")
_FSDP = ("--config.mesh.data=1", "--config.mesh.fsdp=-1")
_VIDEO_81 = ("--config.sample.duration=5",)  # 5 s at 16 fps = 81 frames (21 latent frames)


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table: what it is and the command's arguments."""
  name: str
  what: str
  config: str
  topology: str
  program: str
  overrides: tuple[str, ...] = ()
  batch: int = 0

  def args(self) -> list[str]:
    out = [f"--config={self.config}", f"--topology={self.topology}", f"--program={self.program}",
           *self.overrides]
    return out + ([f"--batch={self.batch}"] if self.batch else [])


ROWS = (
    Row("c2i_B_train", "C2I GRN-B training, batch 1024", "configs/c2i.py:variant=B", "v5p-16",
        "train", _C2I),
    Row("c2i_L_train", "C2I GRN-L training, batch 1024", "configs/c2i.py:variant=L", "v5p-32",
        "train", _C2I),
    Row("c2i_H_train", "C2I GRN-H training, batch 1024", "configs/c2i.py:variant=H", "v5p-64",
        "train", _C2I),
    Row("c2i_G_train", "C2I GRN-G training, batch 1024", "configs/c2i.py:variant=G", "v5p-64",
        "train", _C2I),
    Row("c2i_B_train_v6e", "C2I GRN-B training, batch 1024", "configs/c2i.py:variant=B",
        "v6e-32", "train", _C2I),
    Row("c2i_B_train_v5e", "C2I GRN-B training, batch 1024", "configs/c2i.py:variant=B",
        "v5e-64", "train", _C2I),
    Row("c2i_G_sample", "C2I GRN-G sampler (CFG, 50 steps) + decode, batch 256",
        "configs/c2i.py:variant=G", "v5p-8", "sample",
        ("--config.model.dtype=bfloat16", "--config.model.scan_layers=True",
         "--config.sample.batch_size=256", "--config.sample.num_steps=50")),
    Row("decode_image_1024", "HBQ tokenizer decode, 1024^2 images",
        "configs/tokenizer.py:variant=image16", "v5p-8", "decode",
        ("--config.tokenizer.dtype=bfloat16", "--config.data.image_size=1024")),
    Row("decode_image_1024_v6e", "HBQ tokenizer decode, 1024^2 images",
        "configs/tokenizer.py:variant=image16", "v6e-8", "decode",
        ("--config.tokenizer.dtype=bfloat16", "--config.data.image_size=1024")),
    Row("decode_video_81", "HBQ tokenizer decode, 480p x 81-frame clips",
        "configs/t2iv.py:variant=2B,task=t2v", "v5p-8", "decode",
        ("--config.tokenizer.dtype=bfloat16", *_VIDEO_81)),
    Row("t2i_2B_denoise", "T2I-2B network pass, 1024^2 (sampler step)",
        "configs/t2iv.py:variant=2B,task=t2i", "v5p-8", "denoise", _BF16_T2IV),
    Row("t2v_2B_denoise", "T2V-2B network pass, 480p x 81 (sampler step)",
        "configs/t2iv.py:variant=2B,task=t2v", "v5p-8", "denoise", (*_BF16_T2IV, *_VIDEO_81)),
    Row("t2v_2B_denoise_v6e", "T2V-2B network pass, 480p x 81 (sampler step)",
        "configs/t2iv.py:variant=2B,task=t2v", "v6e-8", "denoise",
        (*_BF16_T2IV, *_VIDEO_81, *_FSDP)),
    Row("t2v_8B_denoise", "8B network pass, 480p x 81 (sampler step)",
        "configs/t2iv.py:variant=8B,task=t2v", "v5p-8", "denoise",
        (*_BF16_T2IV, *_VIDEO_81, *_FSDP)),
    Row("umt5_xxl_encode", "umT5-XXL encoder, 512 tokens", "configs/umt5.py:variant=xxl",
        "v5p-8", "encode_text", _FSDP),
    Row("umt5_xxl_encode_v5e", "umT5-XXL encoder, 512 tokens", "configs/umt5.py:variant=xxl",
        "v5e-8", "encode_text", _FSDP),
)


def command(row: Row) -> str:
  return "python -m grn_jax.aot " + " ".join(shlex.quote(a) for a in row.args())


def run_row(row: Row, out_dir: str) -> dict:
  """Compiles one row in its own process; returns its JSON report."""
  path = os.path.join(out_dir, f"{row.name}.json")
  cmd = [sys.executable, "-m", "grn_jax.aot", *row.args(), f"--json={path}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"row {row.name} failed ({command(row)}):\n{proc.stderr[-3000:]}")
  with open(path) as f:
    return json.load(f)


def table(rows: list[tuple[Row, dict]]) -> str:
  """The Markdown table of the rows and their reports."""
  gib = lambda b: f"{b / 2**30:.1f}"
  lines = ["| program | slice | mesh | batch (per chip) | settings | GiB per chip (HBM) | "
           "compiler / model TFLOP per chip | compile s |",
           "|---|---|---|---|---|---|---|---|"]
  for row, r in rows:
    mem = r["per_device"]
    settings = ", ".join(f"{k}={v}" for k, v in r["settings"].items())
    fits = "" if r["fits"] else " **does not fit**"
    lines.append(
        f"| {row.what} | {r['topology']} ({r['num_devices']} chips) | "
        f"{'x'.join(str(v) for v in r['mesh'].values())} | {r['global_batch']} "
        f"({r['per_chip_batch']:g}) | {settings} | {gib(mem['total_bytes'])} "
        f"({gib(r['hbm_bytes'])}){fits} | {r['compiler_flops'] / 1e12:.2f} / "
        f"{r['model_flops'] / r['num_devices'] / 1e12:.2f} | {r['compile_seconds']:.0f} |")
  lines.append("")
  lines.append("Commands (mesh = data x fsdp x tensor):")
  lines.extend(f"  {row.name}: {command(row)}" for row, _ in rows)
  return "\n".join(lines)


def define_flags() -> None:
  flags.DEFINE_list("rows", [], f"Rows to compile (default all): {[r.name for r in ROWS]}.")
  flags.DEFINE_string("out_dir", "/tmp/grn_aot_table", "Where the JSON reports go.")
  flags.DEFINE_bool("reuse", False, "Use a row's JSON in --out_dir if it is there already.")


def main(argv):
  del argv
  by_name = {r.name: r for r in ROWS}
  unknown = sorted(set(FLAGS.rows) - set(by_name))
  if unknown:
    raise app.UsageError(f"unknown rows {unknown}; known: {list(by_name)}.")
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  done = []
  for row in [by_name[n] for n in FLAGS.rows] if FLAGS.rows else ROWS:
    path = os.path.join(FLAGS.out_dir, f"{row.name}.json")
    if FLAGS.reuse and os.path.exists(path):
      with open(path) as f:
        done.append((row, json.load(f)))
    else:
      print(f"compiling {row.name}: {command(row)}", flush=True)
      done.append((row, run_row(row, FLAGS.out_dir)))
  print(table(done))


if __name__ == "__main__":
  define_flags()
  app.run(main)
