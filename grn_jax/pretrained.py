r"""Released GRN models in one line: download, convert once into a local cache, reuse.

  from grn_jax import pretrained
  model = pretrained.load("GRN_ind_B", trust_pickle=True)   # .config, .params, .path
  tokenizer = pretrained.load("HBQ_image_tokenizer_16dim_M4")

  python -m grn_jax.pretrained --list
  python -m grn_jax.pretrained --name=GRN_ind_B --trust_pickle      # fetch + convert, print dir
  python -m grn_jax.pretrained --name=GRN_ind_B --export_torch=GRN_ind_B.pth
  python -m grn_jax.main --mode=sample --config=configs/c2i.py:variant=B --workdir=DIR \
      --pretrained=GRN_ind_B --trust_pickle                         # the model and its tokenizer

The first `load` of a name downloads its file from the Hugging Face hub repo REPO_ID through
huggingface_hub (its own cache; the `hub` extra), converts it with grn_jax.convert (needs the
`torch` extra) into `cache_dir('pretrained', NAME-HASH)` as an Orbax params directory (`params/`,
umT5 also `tokenizer/`) and marks it complete with `release.json`; later loads read that
directory only (no torch, no network). HASH fingerprints the config section the params were
converted for (e.g. model.scan_layers changes the layout), so every layout has its own copy.
Offline, the error gives the manual download command; after it, `load` finds the file in the
hub cache (or pass `source=` a local copy). The C2I file pickles an argparse Namespace: it is
only read with `trust_pickle=True` (`--trust_pickle`).
"""

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
from typing import Any, NamedTuple

from absl import app
from absl import flags
from absl import logging
import ml_collections

from grn_jax import checkpointing
from grn_jax import user_cache

REPO_ID = "bytedance-research/GRN"
MARKER = "release.json"
SECTIONS = {"c2i": "model", "t2iv": "model", "tokenizer": "tokenizer", "umt5": "text_encoder"}
# Section fields that do not change the converted params (paths, compute and memory settings):
# left out of the cache fingerprint, so that e.g. --pretrained's own assignments or a bf16 run
# reuse the same copy.
RUNTIME_FIELDS = ("checkpoint", "random_init", "tokenizer_path", "dtype", "attention_impl",
                  "remat_policy", "frame_chunk", "tile_latent", "tile_overlap", "max_length",
                  "length_buckets")


class PickleTrustError(ValueError):
  """A release that can only be read with a full unpickle was requested without trust."""


@dataclasses.dataclass(frozen=True)
class Release:
  """One released file of REPO_ID and what reading it needs."""
  kind: str               # the converter (python -m grn_jax.convert --kind)
  hub_path: str           # the file (umT5: the folder) in the hub repo
  config: str             # the config whose section matches the file, 'configs/x.py:args'
  params: str             # parameter count (GRN-PARAM-SHAPES / the configs)
  min_download_gb: float  # lower bound: one copy of the weights (float32; umT5 bfloat16)
  needs_trust: bool = False  # the file pickles Python objects
  tokenizer: str = ""     # the release whose tokenizer decodes its labels
  text_encoder: str = ""  # the release that encodes its prompts


RELEASES = {
    # model, model_ema1, model_ema2 (+ optimizer): 3 copies at least, ~1.6 GB.
    "GRN_ind_B": Release("c2i", "GRN_ind_B_ep599.pth", "configs/c2i.py:variant=B", "130.86M",
                         1.6, needs_trust=True, tokenizer="HBQ_image_tokenizer_16dim_M4"),
    "HBQ_image_tokenizer_16dim_M4": Release(
        "tokenizer", "HBQ_image_tokenizer_16dim_M4.ckpt", "configs/tokenizer.py:variant=image16",
        "702.69M", 2.8),
    "HBQ_tokenizer_64dim_M4": Release(
        "tokenizer", "HBQ_tokenizer_64dim_M4.ckpt", "configs/tokenizer.py:variant=video64",
        "705.69M", 2.8),
    "GRN_T2I_2B": Release("t2iv", "GRN_T2I_2B.pth", "configs/t2iv.py:variant=2B,task=t2i",
                          "2.198B", 8.8, tokenizer="HBQ_tokenizer_64dim_M4",
                          text_encoder="umt5-xxl"),
    "GRN_T2V_2B": Release("t2iv", "GRN_T2V_2B.pth", "configs/t2iv.py:variant=2B,task=t2v",
                          "2.198B", 8.8, tokenizer="HBQ_tokenizer_64dim_M4",
                          text_encoder="umt5-xxl"),
    "umt5-xxl": Release("umt5", "umt5-xxl", "configs/umt5.py:variant=xxl", "5.68B", 11.4),
}


class Pretrained(NamedTuple):
  config: ml_collections.ConfigDict  # the config the params belong to
  params: Any                        # numpy params tree
  path: str                          # the cached directory (params/, umT5 also tokenizer/)


def get_release(name: str) -> Release:
  if name not in RELEASES:
    raise KeyError(f"unknown pretrained model {name!r}; known: {', '.join(RELEASES)} "
                   "(python -m grn_jax.pretrained --list).")
  return RELEASES[name]


def release_config(name: str) -> ml_collections.ConfigDict:
  """The registered config of release `name` (needs the repository's configs/ importable)."""
  spec = get_release(name).config
  path, _, arg = spec.partition(":")
  module_name = path.removesuffix(".py").replace("/", ".")
  try:
    module = importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        f"{name} needs the config {spec}, and {module_name} is not importable: run from a "
        "checkout of grn_jax (its root on sys.path) or pass config=.") from e
  return module.get_config(arg or None)


def _fingerprint(config: ml_collections.ConfigDict, kind: str) -> str:
  section = {k: v for k, v in config[SECTIONS[kind]].to_dict().items()
             if k not in RUNTIME_FIELDS}
  text = json.dumps(section, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:10]


def cached_path(name: str, config: ml_collections.ConfigDict | None = None) -> str:
  """The cache directory of `name` converted for `config` (default: its registered config)."""
  release = get_release(name)
  config = config if config is not None else release_config(name)
  return user_cache.cache_dir("pretrained", f"{name}-{_fingerprint(config, release.kind)}")


def is_cached(path: str) -> bool:
  return os.path.exists(os.path.join(path, MARKER))


def _trust_error(release: Release) -> PickleTrustError:
  return PickleTrustError(
      f"{release.hub_path} pickles Python objects (an argparse Namespace), so reading it runs "
      f"code from the file. If you trust {REPO_ID}, pass trust_pickle=True (command lines: "
      "--trust_pickle); it is read once, converted, and never unpickled again.")


def fetch(name: str, config: ml_collections.ConfigDict | None = None,
          trust_pickle: bool = False, source: str | None = None) -> str:
  """The cached directory of release `name`, downloaded and converted first if needed.

  Args:
    name: a key of RELEASES.
    config: a config whose section of the release's kind matches the file (default: the
      registered one); the cache is per layout of that section.
    trust_pickle: allow the full unpickle that files with needs_trust require.
    source: a local copy of the file (or hf://...) instead of the hub repo's.

  Returns:
    The directory: `params/` (an Orbax params dir; umT5 also `tokenizer/`) and release.json.
  """
  release = get_release(name)
  config = config if config is not None else release_config(name)
  path = cached_path(name, config)
  if is_cached(path):
    logging.info("pretrained %s: the converted copy in %s", name, path)
    return path
  if release.needs_trust and not trust_pickle:
    raise _trust_error(release)
  from grn_jax.convert import files  # pylint: disable=g-import-not-at-top (torch only here)
  src = source or f"hf://{REPO_ID}/{release.hub_path}"
  print(f"pretrained {name}: fetching {src} (>= {release.min_download_gb} GB, "
        f"{release.params} parameters) and converting it once into {path}")
  tmp = f"{path}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    os.makedirs(tmp)
    dst = tmp if release.kind == "umt5" else os.path.join(tmp, "params")
    if release.kind == "umt5":
      os.rmdir(tmp)  # the umT5 converter creates its directory
    files.convert(release.kind, src, dst, config, trust_pickle=trust_pickle)
    with open(os.path.join(tmp, MARKER), "w") as f:
      json.dump(dict(name=name, repo=REPO_ID, file=release.hub_path, source=src,
                     config=release.config, section=config[SECTIONS[release.kind]].to_dict()),
                f, indent=1, default=str)
    shutil.rmtree(path, ignore_errors=True)  # an incomplete copy without the marker
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return path


def load(name: str, config: ml_collections.ConfigDict | None = None,
         trust_pickle: bool = False, source: str | None = None) -> Pretrained:
  """Release `name` as (config, numpy params, cached dir); see `fetch` for the arguments."""
  config = config if config is not None else release_config(name)
  path = fetch(name, config, trust_pickle=trust_pickle, source=source)
  return Pretrained(config, checkpointing.restore_params(os.path.join(path, "params")), path)


def _set(config: ml_collections.ConfigDict, field: str, value: str) -> str:
  section, key = field.split(".")
  if section not in config or key not in config[section]:
    raise ValueError(f"--pretrained sets config.{field}, which this config lacks.")
  config[section][key] = value
  return f"config.{field}={value}"


def apply_to_config(config: ml_collections.ConfigDict, name: str, mode: str,
                    trust_pickle: bool = False) -> list[str]:
  """Fetches release `name` (and the tokenizer / text encoder it needs) for `config` and points
  the config at the cached params: a model at config.sample.checkpoint (mode 'sample') or
  config.train.init_from ('train'), a tokenizer at config.tokenizer.checkpoint, umT5 at
  config.text_encoder.{checkpoint, tokenizer_path}. Returns the assignments made."""
  release = get_release(name)
  needs_trust = [n for n in (name, release.tokenizer, release.text_encoder)
                 if n and get_release(n).needs_trust and not is_cached(cached_path(n, config))]
  if needs_trust and not trust_pickle:  # before anything is downloaded
    raise _trust_error(get_release(needs_trust[0]))
  done = []
  if release.tokenizer:
    done += apply_to_config(config, release.tokenizer, mode, trust_pickle)
  if release.text_encoder:
    done += apply_to_config(config, release.text_encoder, mode, trust_pickle)
  path = fetch(name, config, trust_pickle=trust_pickle)
  params = os.path.join(path, "params")
  if release.kind == "tokenizer":
    done.append(_set(config, "tokenizer.checkpoint", params))
  elif release.kind == "umt5":
    done.append(_set(config, "text_encoder.checkpoint", params))
    done.append(_set(config, "text_encoder.tokenizer_path", os.path.join(path, "tokenizer")))
  else:
    done.append(_set(config, "sample.checkpoint" if mode == "sample" else "train.init_from",
                     params))
  return done


def format_registry() -> str:
  """The RELEASES table: name, kind, hub file, parameters, download, config."""
  lines = [f"{'name':30s} {'kind':9s} {'parameters':>10s} {'GB >=':>6s}  file / config"]
  for name, r in RELEASES.items():
    trust = "  (trust_pickle)" if r.needs_trust else ""
    lines.append(f"{name:30s} {r.kind:9s} {r.params:>10s} {r.min_download_gb:6.1f}  "
                 f"{REPO_ID}/{r.hub_path}  {r.config}{trust}")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_bool("list", False, "Print the registry of released files.")
  flags.DEFINE_string("name", None, "The release to fetch and convert (see --list).")
  flags.DEFINE_bool("trust_pickle", False, "Allow the full unpickle the C2I file needs.")
  flags.DEFINE_string("source", None, "A local copy of the file instead of the hub's.")
  flags.DEFINE_string("export_torch", None, "Also write the converted params back as a PyTorch "
                      "file here (the released container layout).")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.list or not FLAGS.name:
    print(format_registry())
    return
  config = release_config(FLAGS.name)
  path = fetch(FLAGS.name, config, trust_pickle=FLAGS.trust_pickle, source=FLAGS.source)
  print(path)
  if FLAGS.export_torch:
    from grn_jax.convert import files  # pylint: disable=g-import-not-at-top
    files.export_torch(get_release(FLAGS.name).kind, os.path.join(path, "params"),
                       FLAGS.export_torch, config)


def run() -> None:
  """Console script `grn-pretrained`."""
  define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
