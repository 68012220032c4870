"""What resume checks: the config saved with the checkpoint against the new one.

A run resumes only with the config it was started with, except for the fields that do not
change what is trained (FREE_TO_CHANGE: the run's length limit, logging and checkpoint
cadence, the mesh, worker counts, sampling and evaluation settings). Any other difference (the
model, the optimizer, the data, the global batch size: the data iterator counts batches, so a
new batch size would resume at another position of the data) stops the run with
ResumeConfigError naming every differing field, unless `config.train.resume_allow_changes`
lists it (comma-separated dotted names, or '*' for any).
"""

from typing import Any, Mapping

# Dotted names (a trailing '.' names a whole section) that may differ from the checkpoint's.
FREE_TO_CHANGE = (
    "mode", "train.total_steps", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "train.async_checkpointing", "train.init_from",
    "train.sample_every_steps", "train.peak_flops_per_device", "train.resume_allow_changes",
    "data.num_workers", "data.data_dir", "data.max_bad_images", "mesh.", "sharding_rules",
    "sample.", "eval.", "demo.", "tokenizer_train.")


class ResumeConfigError(ValueError):
  """The config differs from the one the workdir's checkpoints were trained with."""


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, Mapping):
    return {prefix[:-1]: tree}
  flat = {}
  for k, v in tree.items():
    flat.update(_flat(v, f"{prefix}{k}."))
  return flat


def _free(name: str, allowed: tuple[str, ...]) -> bool:
  return any(name == f or (f.endswith(".") and name.startswith(f)) for f in allowed)


def config_changes(stored: Mapping[str, Any], new: Mapping[str, Any],
                   allow: str = "") -> list[str]:
  """'field: old -> new' for every field that differs and may not (sorted)."""
  if allow.strip() == "*":
    return []
  allowed = FREE_TO_CHANGE + tuple(a.strip() for a in allow.split(",") if a.strip())
  old, now = _flat(stored), _flat(new)
  return [f"{k}: {old.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}"
          for k in sorted(set(old) | set(now))
          if old.get(k) != now.get(k) and not _free(k, allowed)]


def check_resume_config(stored: Mapping[str, Any], new: Mapping[str, Any], allow: str,
                        where: str) -> None:
  """Raises ResumeConfigError naming the fields of `new` that differ from `stored` (the config
  of the checkpoint `where`); `allow` is config.train.resume_allow_changes."""
  changes = config_changes(stored, new, allow)
  if changes:
    names = ",".join(c.split(":")[0] for c in changes)
    raise ResumeConfigError(
        f"the config differs from the one {where} was trained with: {'; '.join(changes)}. "
        "Resume with the same config, train in a new workdir, or accept the change explicitly "
        f"with --config.train.resume_allow_changes={names} ('*' for any).")
