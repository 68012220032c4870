"""The entry points' XLA settings: added on CPU, the user's own XLA_FLAGS respected."""

from grn_jax import platform

YNN = "--xla_cpu_experimental_ynn_fusion_type"


def test_adds_the_cpu_flags_after_the_users_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  got = platform.configure_xla(env)
  assert got == env["XLA_FLAGS"]
  assert got.split() == ["--xla_force_host_platform_device_count=8", *platform.CPU_XLA_FLAGS]
  assert platform.configure_xla(env) == got  # idempotent: nothing added twice
  assert platform.configure_xla({}) == " ".join(platform.CPU_XLA_FLAGS)


def test_a_flag_the_user_set_wins():
  env = {"XLA_FLAGS": f"{YNN}=default  --xla_dump_to=/tmp/x"}
  assert platform.configure_xla(env) == f"{YNN}=default  --xla_dump_to=/tmp/x"


def test_no_cpu_backend_no_change():
  env = {"JAX_PLATFORMS": "tpu", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  assert platform.configure_xla(env) == "--xla_dump_to=/tmp/x"
  cuda = {"JAX_PLATFORMS": "cuda"}
  assert platform.configure_xla(cuda) == "" and "XLA_FLAGS" not in cuda
  assert platform.wants_cpu({"JAX_PLATFORMS": "cuda, cpu"})
  assert platform.wants_cpu({"JAX_PLATFORMS": ""}) and not platform.wants_cpu(
      {"JAX_PLATFORMS": "tpu"})
