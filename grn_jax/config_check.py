"""Start-up checks of config sections: every field present and known, errors naming the field.

The module that reads a section states its fields once (e.g. `grn_c2i.MODEL_FIELDS`) and checks
the section with `check_fields` before it uses it; defaults live in the config files only, so a
field is read directly (`cfg.field`), never with a fallback.
"""

from typing import Any, Collection, Sequence

import ml_collections


def check_fields(section: ml_collections.ConfigDict, name: str, fields: Sequence[str],
                 optional: Sequence[str] = ()) -> None:
  """Raises ValueError naming the missing and unknown fields of `config.<name>`.

  Args:
    section: the config section (a ConfigDict or dict).
    name: its path in the config, e.g. 'model' or 'train' ('' for the top level).
    fields: every field the section must have.
    optional: fields it may have (whole sections that only some configs carry).
  """
  keys = set(section.keys())
  missing = [f for f in fields if f not in keys]
  unknown = sorted(keys - set(fields) - set(optional))
  if missing or unknown:
    where = f"config.{name}" if name else "config"
    raise ValueError(f"{where}: missing fields {missing}, unknown fields {unknown} "
                     f"(known: {', '.join(tuple(fields) + tuple(optional))}).")


def check_choice(name: str, value: Any, choices: Collection[Any]) -> None:
  """Raises ValueError `{name} must be one of {choices}, got {value!r}.` unless value is one."""
  if value not in choices:
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
