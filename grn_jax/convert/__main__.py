r"""Converts a released PyTorch checkpoint into an Orbax params checkpoint.

  python -m grn_jax.convert --kind=c2i \
      --src=hf://bytedance-research/GRN/GRN_ind_B_ep599.pth --trust_pickle \
      --dst=/tmp/grn_b --config=configs/c2i.py:variant=B
  python -m grn_jax.convert --kind=tokenizer \
      --src=hf://bytedance-research/GRN/HBQ_image_tokenizer_16dim_M4.ckpt \
      --dst=/tmp/hbq16 --config=configs/c2i.py:variant=B
  python -m grn_jax.convert --kind=t2iv --src=hf://bytedance-research/GRN/GRN_T2I_2B.pth \
      --dst=/tmp/grn_t2i_2b --config=configs/t2iv.py:variant=2B,task=t2i
      (GRN_T2V_2B.pth with task=t2v)
  python -m grn_jax.convert --kind=umt5 --src=hf://bytedance-research/GRN/umt5-xxl \
      --dst=/tmp/umt5-xxl-jax --config=configs/umt5.py:variant=xxl

`--src` is a local file or hf://ORG/REPO/FILE (needs the `hub` extra and network; offline, the
error says how to download by hand). Reading .pth/.ckpt needs the `torch` extra. The C2I file
pickles an argparse Namespace: reading it needs --trust_pickle. The result restores with
`grn_jax.checkpointing.restore_params(dst)` (the sampler and the trainer's `init_from` use it).
The umT5 text encoder is converted streaming in bf16 from the hub's `umt5-xxl/` folder (or a
local copy, or the .pth with its tokenizer files beside it) into `dst/params` with its
tokenizer files in `dst/tokenizer` (grn_jax/convert/umt5.py).

The other way, a params directory back to the official PyTorch file (grn_jax/convert/files.py
`export_torch`; needs torch):
  python -m grn_jax.convert --to_torch --kind=c2i --src=/tmp/grn_b --dst=/tmp/GRN_ind_B.pth \
      --config=configs/c2i.py:variant=B
The registry of released files (download, convert once, cache) is `python -m grn_jax.pretrained`.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from grn_jax.convert import files

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config whose model/tokenizer/text_encoder "
                                "section matches the checkpoint.", lock_config=True)
flags.DEFINE_enum("kind", None, list(files.KINDS), "What the file holds.")
flags.DEFINE_string("src", None, "Local .pth/.ckpt path or hf://ORG/REPO/FILE (umt5: also a "
                    "folder, hf://ORG/REPO/FOLDER).")
flags.DEFINE_string("dst", None, "Output directory (an Orbax checkpoint of {'params': ...}).")
flags.DEFINE_string("entry", None, "Sub-dict with the weights (default: model_ema1 for C2I "
                    "files; ema, else vae, for tokenizer files; the whole file for umt5).")
flags.DEFINE_bool("trust_pickle", False, "Allow a full unpickle (needed for the released C2I "
                  "file, which stores an argparse Namespace). Only for files you trust.")
flags.DEFINE_bool("to_torch", False, "The other way: --src is a params directory, --dst the "
                  "PyTorch file to write (the released container layout).")
flags.mark_flags_as_required(["config", "kind", "src", "dst"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.to_torch:
    files.export_torch(FLAGS.kind, FLAGS.src, FLAGS.dst, FLAGS.config)
  else:
    files.convert(FLAGS.kind, FLAGS.src, FLAGS.dst, FLAGS.config, FLAGS.entry, FLAGS.trust_pickle)


def run_cli() -> None:
  """Console script `grn-convert` (= python -m grn_jax.convert)."""
  app.run(main)


if __name__ == "__main__":
  run_cli()
