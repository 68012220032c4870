"""Reference statistics for FID: npz files holding `mu` [2048] and `sigma` [2048, 2048].

Ours (`save_stats`) also hold `protocol`, the FID preprocessing the statistics were computed with
(grn_jax/evaluation/fid_protocol.py); the known public files below are all `torch_fidelity`
(the TF1 FID graph), which `fid_protocol.REFERENCE_PROTOCOLS` records by file name.

Known files (download them yourself; nothing is fetched at run time):
  * ADM / guided-diffusion reference batch, ImageNet 256 (keys mu, sigma, and the 10k reference
    images arr_0 used for precision/recall):
    https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/VIRTUAL_imagenet256_labeled.npz
  * JiT's ImageNet statistics used by the official GRN evaluation (torch-fidelity
    `fid_statistics_file`, keys mu, sigma): fid_stats/jit_in256_stats.npz and jit_in512_stats.npz
    of https://github.com/LTH14/JiT (e.g. https://github.com/LTH14/JiT/raw/main/fid_stats/jit_in256_stats.npz).
"""

import os

import numpy as np

KNOWN_URLS = {
    "VIRTUAL_imagenet256_labeled.npz": (
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/256/"
        "VIRTUAL_imagenet256_labeled.npz"),
    "VIRTUAL_imagenet512.npz": (
        "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/ref_batches/imagenet/512/"
        "VIRTUAL_imagenet512.npz"),
    "jit_in256_stats.npz": "https://github.com/LTH14/JiT/raw/main/fid_stats/jit_in256_stats.npz",
    "jit_in512_stats.npz": "https://github.com/LTH14/JiT/raw/main/fid_stats/jit_in512_stats.npz",
}


def _missing_message(path: str) -> str:
  name = os.path.basename(path)
  if name in KNOWN_URLS:
    return (f"reference statistics {path} not found. Download them:\n  wget {KNOWN_URLS[name]} "
            f"-O {path}")
  known = "\n".join(f"  {n}: {u}" for n, u in KNOWN_URLS.items())
  return (f"reference statistics {path} not found. Known reference files:\n{known}\nor write your "
          "own with `python -m grn_jax.evaluation.fid --samples=REAL.npz --save_stats=OUT.npz`.")


def load_reference(path: str, need_images: bool = False) -> dict[str, np.ndarray]:
  """Reads a reference npz -> dict(mu float64 [D], sigma float64 [D, D][, protocol str]
  [, images uint8]).

  Args:
    path: the npz (ADM reference batch, JiT / torch-fidelity stats, or our own `save_stats`).
    need_images: also return the reference images (ADM's `arr_0`) for precision/recall.
  """
  path = os.path.expanduser(path)
  if not os.path.exists(path):
    raise FileNotFoundError(_missing_message(path))
  with np.load(path) as data:
    keys = set(data.files)
    if not {"mu", "sigma"} <= keys:
      raise KeyError(f"{path} holds keys {sorted(keys)}; FID statistics need 'mu' and 'sigma' "
                     "(ADM reference batches and torch-fidelity / JiT stats files have both).")
    out = dict(mu=np.asarray(data["mu"], np.float64), sigma=np.asarray(data["sigma"], np.float64))
    if "protocol" in keys:
      out["protocol"] = str(data["protocol"])
    if need_images:
      image_key = next((k for k in ("arr_0", "images") if k in keys), None)
      if image_key is None:
        raise KeyError(f"{path} holds no reference images ('arr_0' or 'images'), which "
                       "precision/recall needs; use an ADM reference batch such as "
                       f"VIRTUAL_imagenet256_labeled.npz ({KNOWN_URLS['VIRTUAL_imagenet256_labeled.npz']}).")
      out["images"] = np.asarray(data[image_key])
  d = out["mu"].shape
  if out["mu"].ndim != 1 or out["sigma"].shape != (d[0], d[0]):
    raise ValueError(f"{path}: mu {out['mu'].shape} and sigma {out['sigma'].shape} are not "
                     "[D] and [D, D].")
  return out


def save_stats(path: str, mu: np.ndarray, sigma: np.ndarray, protocol: str | None = None,
               **extra: np.ndarray) -> None:
  """Writes mu/sigma (and extra arrays) in the same npz format.

  Args:
    path: the .npz to write.
    mu, sigma: float [D], [D, D].
    protocol: the FID protocol of the features (fid_protocol.PROTOCOLS), stored so that
      `--protocol=auto` evaluations against this file use it; None for features of another
      network (e.g. the digits demo's classifier).
    **extra: more arrays to store.
  """
  path = os.path.expanduser(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if protocol is not None:
    extra["protocol"] = np.asarray(protocol)
  np.savez(path, mu=mu, sigma=sigma, **extra)
