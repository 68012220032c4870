"""What every config file shares: `:key=value` arguments, the mesh and the logical-axis rules."""

import ml_collections


# Entropy-guided steps with the official constants (the initial official commit's rule, GRN-SPEC
# §F.4): H at step warmup_steps sets each row's budget (grn_jax/sampling/refine.py).
OFFICIAL_ENTROPY_STEPS = dict(warmup_steps=5, min_steps=10, max_steps=50,
                              entropy_k=417.7052426732362, entropy_b=-318.1272488653967)


def parse_arg(arg: str | None, defaults: dict[str, str]) -> dict[str, str]:
  """'variant=B,label_mode=bit' -> {'variant': 'B', 'label_mode': 'bit'} over `defaults`.

  Args:
    arg: the text after the config file's ':' (None or '' for none).
    defaults: every known key with its default value.

  Returns:
    `defaults` updated with the given values.

  Raises:
    ValueError: for an item without '=' or a key that `defaults` does not know.
  """
  out = dict(defaults)
  unknown = []
  for item in filter(None, (arg or "").split(",")):
    if "=" not in item:
      raise ValueError(f"config argument {item!r} must look like key=value.")
    key, value = (part.strip() for part in item.split("=", 1))
    if key not in defaults:
      unknown.append(key)
    out[key] = value
  if unknown:
    raise ValueError(f"unknown config arguments {sorted(unknown)}; known: "
                     f"{', '.join(defaults)}.")
  return out


def mesh_config() -> ml_collections.ConfigDict:
  """The `mesh` section: sizes of the ('data', 'fsdp', 'tensor') axes, -1 = the rest."""
  return ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))


def sharding_rules() -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Logical axis name -> mesh axes (maxtext style), for parameters and activations."""
  return (
      ("batch", ("data", "fsdp")),
      ("embed", "fsdp"),
      ("embed_out", "tensor"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("act_heads", "tensor"),
      ("act_mlp", "tensor"),
      ("act_embed", None),
      ("kv", None),
      ("qkv", None),
      ("gate", None),
      ("chunk", None),
      ("length", None),
      ("layers", None),
      ("norm", None),
      ("classes", None),
      ("vocab", None),
      ("labels", None),
      ("onehot", None),
      ("patch_h", None),
      ("patch_w", None),
      ("bottleneck", None),
      ("freq", None),
  )
