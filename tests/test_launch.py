"""Dry runs of the launch scripts: the exact commands they would issue."""

import os
import pathlib
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"


def dry_run(script: str, *args: str, env: dict[str, str] | None = None, ok: bool = True):
  """Runs launch/<script> --dry-run ARGS; returns (list of issued argv lists, stderr)."""
  full_env = {k: v for k, v in os.environ.items()
              if k not in ("ZONE", "PROJECT", "BUCKET", "TPU_NAME", "CONFIG", "WORKDIR",
                           "CUDA_VISIBLE_DEVICES", "ACCELERATOR_TYPE", "TPU_RUNTIME")}
  full_env.update(env or {})
  proc = subprocess.run(["bash", str(LAUNCH / script), "--dry-run", *args], cwd="/",
                        env=full_env, capture_output=True, text=True, timeout=60)
  if ok:
    assert proc.returncode == 0, proc.stderr
  else:
    assert proc.returncode != 0, proc.stdout
  commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines()
              if line.startswith("+ ")]
  return commands, proc.stderr


def flag(argv: list[str], name: str) -> str:
  values = [a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}=")]
  assert len(values) == 1, (name, argv)
  return values[0]


def test_tpu_vm_all_creates_copies_sets_up_and_runs_on_every_worker():
  commands, _ = dry_run("tpu_vm.sh", "all", "--zone=us-east5-a", "--project=proj",
                        "--accelerator-type=v5p-64", "--spot", "--bucket=gs://bkt/", "--name=pod",
                        "--", "--config.model.dtype=bfloat16")
  assert [c[:5] for c in commands[:1]] == [["gcloud", "compute", "tpus", "tpu-vm", "create"]]
  create = commands[0]
  assert create[5] == "pod"
  assert flag(create, "accelerator-type") == "v5p-64"
  assert flag(create, "version") == "v2-alpha-tpuv5"
  assert flag(create, "zone") == "us-east5-a" and flag(create, "project") == "proj"
  assert "--spot" in create

  tar = commands[1]
  assert tar[:2] == ["tar", "-czf"] and tar[tar.index("-C") + 1] == str(ROOT)
  scp = commands[2]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[5] == tar[2] and scp[6] == "pod:~/grn_jax_src.tar.gz"
  assert flag(scp, "worker") == "all"

  ssh_cmds = commands[3:]
  assert all(c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] for c in ssh_cmds)
  assert all(flag(c, "worker") == "all" for c in ssh_cmds)
  unpack, setup, train = (flag(c, "command") for c in ssh_cmds)
  assert "tar -xzf ~/grn_jax_src.tar.gz -C ~/grn_jax" in unpack
  assert "-r requirements.txt" in setup and "'jax[tpu]==0.10.2'" in setup

  remote = shlex.split(train.split("&&", 1)[1])
  assert remote[:3] == ["python3", "-m", "grn_jax.main"]
  assert "--distributed" in remote
  assert flag(remote, "mode") == "train"
  assert flag(remote, "config") == "configs/c2i.py:variant=B"
  assert flag(remote, "workdir") == "gs://bkt/runs/grn_b"
  assert flag(remote, "config.data.data_dir") == "gs://bkt/tfds"
  assert flag(remote, "config.tokenizer.checkpoint") == "gs://bkt/weights/tokenizer"
  assert remote[-1] == "--config.model.dtype=bfloat16"


def test_tpu_vm_one_time_steps_run_on_worker_zero():
  env = {"ZONE": "z", "BUCKET": "gs://b"}
  (prepare,), _ = dry_run("tpu_vm.sh", "prepare-data", env=env)
  assert flag(prepare, "worker") == "0"
  assert ("tfds build imagenet2012 --data_dir=gs://b/tfds --manual_dir=gs://b/imagenet_manual"
          in flag(prepare, "command"))
  (convert,), _ = dry_run("tpu_vm.sh", "convert", env=env)
  text = flag(convert, "command")
  assert flag(convert, "worker") == "0"
  assert ("--kind=tokenizer --src=hf://bytedance-research/GRN/HBQ_image_tokenizer_16dim_M4.ckpt "
          "--dst=gs://b/weights/tokenizer") in text
  assert "--kind=c2i --src=hf://bytedance-research/GRN/GRN_ind_B_ep599.pth --trust_pickle" in text


def test_tpu_vm_background_run_and_runtime_choice():
  (ssh,), _ = dry_run("tpu_vm.sh", "run", "--background", env={"ZONE": "z", "BUCKET": "gs://b"})
  assert flag(ssh, "command").endswith("> run.log 2>&1 &")
  assert "nohup python3 -m grn_jax.main" in flag(ssh, "command")
  (create,), _ = dry_run("tpu_vm.sh", "create", "--accelerator-type=v6e-256", env={"ZONE": "z"})
  assert flag(create, "version") == "v2-alpha-tpuv6e" and "--spot" not in create


@pytest.mark.parametrize("args, message", [
    (("create",), "--zone is required"),
    (("run", "--zone=z"), "--bucket is required"),
    (("create", "--zone=z", "--accelerator-type=x9-8"), "pass --version"),
    (("launch", "--zone=z"), "unknown subcommand launch"),
    (("run", "--zone=z", "--bucket=/local"), "--bucket must start with gs://"),
])
def test_tpu_vm_bad_input_fails_with_a_message(args, message):
  commands, stderr = dry_run("tpu_vm.sh", *args, ok=False)
  assert message in stderr and not commands


def test_issued_train_command_parses_with_the_real_main_flags():
  (ssh,), _ = dry_run("tpu_vm.sh", "run", "--zone=z", "--bucket=gs://b", "--",
                      "--config.model.dtype=bfloat16")
  remote = shlex.split(flag(ssh, "command").split("&&", 1)[1])
  code = ("import sys; from grn_jax import main; main.FLAGS(sys.argv); c = main.FLAGS.config; "
          "print(main.FLAGS.mode, main.FLAGS.distributed, c.model.name, c.model.dtype, "
          "c.data.data_dir, c.tokenizer.checkpoint)")
  out = subprocess.run([sys.executable, "-c", code, *remote[3:]], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == ["train", "True", "GRN_B", "bfloat16", "gs://b/tfds",
                                "gs://b/weights/tokenizer"]


def test_xpk_cluster_and_multislice_workload():
  env = {"ZONE": "z", "PROJECT": "p"}
  (cluster,), _ = dry_run("xpk_multislice.sh", "cluster", "--num-slices=4",
                          "--tpu-type=v5p-256", "--capacity=reservation=res1", env=env)
  assert cluster[:3] == ["xpk", "cluster", "create"]
  assert flag(cluster, "num-slices") == "4" and flag(cluster, "tpu-type") == "v5p-256"
  assert flag(cluster, "reservation") == "res1"

  build, push = dry_run("xpk_multislice.sh", "image", "--image=reg/img:1", env=env)[0]
  assert build[:2] == ["docker", "build"] and build[build.index("-t") + 1] == "reg/img:1"
  assert push == ["docker", "push", "reg/img:1"]

  (submit,), _ = dry_run("xpk_multislice.sh", "submit", "--workload=w1", "--bucket=gs://b",
                         env=env)
  assert submit[:3] == ["xpk", "workload", "create"]
  assert flag(submit, "workload") == "w1" and flag(submit, "num-slices") == "2"
  assert flag(submit, "docker-image") == "gcr.io/p/grn_jax:latest"
  remote = shlex.split(flag(submit, "command"))
  assert remote[:3] == ["python3", "-m", "grn_jax.main"] and "--distributed" in remote
  assert flag(remote, "workdir") == "gs://b/runs/w1"


def test_xpk_rejects_bad_capacity_and_missing_project():
  _, stderr = dry_run("xpk_multislice.sh", "cluster", "--zone=z", "--project=p",
                      "--capacity=cheap", ok=False)
  assert "--capacity must be" in stderr
  _, stderr = dry_run("xpk_multislice.sh", "list", "--zone=z", ok=False)
  assert "--project is required" in stderr


def test_multi_gpu_runs_one_process_on_the_chosen_gpus():
  (cmd,), _ = dry_run("multi_gpu.sh", "run", "--gpus=0,1,2,3", "--workdir=/w", "--",
                      "--config.train.global_batch_size=512")
  assert cmd[0] == "env" and "CUDA_VISIBLE_DEVICES=0,1,2,3" in cmd
  main = cmd[cmd.index("-m") - 1:]
  assert main[1:3] == ["-m", "grn_jax.main"] and "--distributed" not in main
  assert flag(main, "mode") == "train" and flag(main, "workdir") == "/w"
  assert flag(main, "config.model.dtype") == "bfloat16"
  assert main[-1] == "--config.train.global_batch_size=512"
  setup = dry_run("multi_gpu.sh", "setup")[0]
  assert setup[1][-1] == "jax[cuda12]==0.10.2"
  _, stderr = dry_run("multi_gpu.sh", "run", "--gpus=all", ok=False)
  assert "--gpus must look like" in stderr


def test_local_demo_and_evaluate():
  (demo,), _ = dry_run("local.sh", "demo", "--python=py", "--workdir=/tmp/d")
  assert demo == ["py", "-m", "grn_jax.main", "--config=configs/demo.py", "--workdir=/tmp/d"]
  (evaluate,), _ = dry_run("local.sh", "evaluate", "--python=py", "--workdir=/tmp/d")
  assert evaluate == ["py", "-m", "grn_jax.demo.evaluate", "--samples=/tmp/d/samples.npz",
                      "--samples=/tmp/d/samples_adaptive.npz"]
  (tiny,), _ = dry_run("local.sh", "tiny", "--python=py")
  assert flag(tiny, "config") == "configs/c2i.py:variant=tiny"
  assert flag(tiny, "workdir") == "workdir/tiny"


# The one argument parser of launch/common.sh, through every script.
SCRIPTS = {  # script -> (a subcommand that issues commands, its environment, a value flag)
    "local.sh": ("demo", {}, "workdir"),
    "multi_gpu.sh": ("run", {}, "workdir"),
    "tpu_vm.sh": ("run", {"ZONE": "z", "BUCKET": "gs://b"}, "config"),
    "xpk_multislice.sh": ("submit", {"ZONE": "z", "PROJECT": "p", "BUCKET": "gs://b"},
                          "config"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_shared_parser_takes_both_value_forms(script):
  subcommand, env, name = SCRIPTS[script]
  joined, _ = dry_run(script, subcommand, f"--{name}=some/value:x", env=env)
  spaced, _ = dry_run(script, f"--{name}", "some/value:x", subcommand, env=env)
  assert joined == spaced and joined
  assert any("some/value:x" in " ".join(c) for c in joined)   # the value reached the command


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@pytest.mark.parametrize("args, message", [
    (("--bogus=1",), "unknown flag --bogus (see --help)."),
    (("--bogus",), "unknown flag --bogus (see --help)."),
    (("-x",), "unknown flag -x (see --help)."),
    (("second",), "one subcommand at a time"),
])
def test_shared_parser_rejects_unknown_flags_and_extra_subcommands(script, args, message):
  subcommand, env, _ = SCRIPTS[script]
  commands, stderr = dry_run(script, subcommand, *args, env=env, ok=False)
  assert message in stderr and not commands


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_shared_parser_names_a_missing_value(script):
  subcommand, env, name = SCRIPTS[script]
  for args in ((subcommand, f"--{name}"), (f"--{name}", "--", subcommand)):
    commands, stderr = dry_run(script, *args, env=env, ok=False)
    assert f"--{name} needs a value: --{name}=VALUE or --{name} VALUE." in stderr
    assert not commands


def test_shared_parser_switches_help_and_missing_subcommand():
  (create,), _ = dry_run("tpu_vm.sh", "--spot", "create", env={"ZONE": "z"})
  assert "--spot" in create
  _, stderr = dry_run("tpu_vm.sh", "create", "--spot=yes", env={"ZONE": "z"}, ok=False)
  assert "--spot takes no value (got --spot=yes)." in stderr
  _, stderr = dry_run("local.sh", ok=False)
  assert "missing SUBCOMMAND" in stderr
  for script in SCRIPTS:
    out = subprocess.run(["bash", str(LAUNCH / script), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "Subcommands" in out.stdout and "set -euo" not in out.stdout
  # Words after -- go to grn_jax.main untouched, flags of the script included.
  (cmd,), _ = dry_run("local.sh", "tiny", "--python=py", "--", "--workdir=x", "--bogus")
  assert cmd[-2:] == ["--workdir=x", "--bogus"] and flag(cmd[:-2], "workdir") == "workdir/tiny"


def test_tpu_vm_t2i_pod_converts_prepares_and_trains_the_2b():
  env = {"ZONE": "z", "BUCKET": "gs://bkt", "CONFIG": "configs/t2iv.py:variant=2B,task=t2i"}
  (convert,), _ = dry_run("tpu_vm.sh", "convert", env=env)
  assert flag(convert, "worker") == "0"
  text = flag(convert, "command")
  assert "--kind=t2iv --src=hf://bytedance-research/GRN/GRN_T2I_2B.pth" in text
  assert "--dst=gs://bkt/weights/grn_t2i_2b" in text and "--kind=umt5" in text
  assert "HBQ_tokenizer_64dim_M4.ckpt --dst=gs://bkt/weights/tokenizer64" in text

  _, err = dry_run("tpu_vm.sh", "prepare-data", env=env, ok=False)
  assert "--captions is required" in err
  (prepare,), _ = dry_run("tpu_vm.sh", "prepare-data", "--captions=/gcs/bkt/c.jsonl",
                          "--media-dir=/gcs/bkt/media", env=env)
  assert flag(prepare, "worker") == "all"   # every process writes its block of shards
  words = shlex.split(flag(prepare, "command").split("&&", 1)[1])
  assert words[:3] == ["python3", "-m", "grn_jax.data.tokenize_captioned"]
  assert "--distributed" in words and flag(words, "out") == "/gcs/bkt/t2iv_data"
  assert flag(words, "config") == "configs/t2iv.py:variant=2B,task=t2i"
  assert flag(words, "config.text_encoder.checkpoint") == "gs://bkt/weights/umt5-xxl-jax/params"

  (train,), _ = dry_run("tpu_vm.sh", "run", "--accelerator-type=v5p-64", "--",
                        "--config.train.total_steps=10", env=env)
  remote = shlex.split(flag(train, "command").split("&&", 1)[1])
  assert remote[:3] == ["python3", "-m", "grn_jax.main"] and "--distributed" in remote
  assert flag(remote, "mode") == "train"
  assert flag(remote, "config") == "configs/t2iv.py:variant=2B,task=t2i"
  assert flag(remote, "workdir") == "gs://bkt/runs/grn_t2i_2b"
  assert flag(remote, "config.data.data_dir") == "/gcs/bkt/t2iv_data"
  assert flag(remote, "config.train.init_from") == "gs://bkt/weights/grn_t2i_2b"
  assert flag(remote, "config.model.dtype") == "bfloat16"
  assert remote[-1] == "--config.train.total_steps=10"
  # The overrides the pod runs give a valid T2I training config (main's start-up check).
  from configs import t2iv as t2iv_configs  # pylint: disable=g-import-not-at-top
  from grn_jax import main as grn_main  # pylint: disable=g-import-not-at-top
  config = t2iv_configs.get_config("variant=2B,task=t2i")
  for word in remote:
    if word.startswith("--config.") and "=" in word:
      path, value = word[len("--config."):].split("=", 1)
      *parents, leaf = path.split(".")
      section = config
      for p in parents:
        section = section[p]
      old = section[leaf]
      section[leaf] = (value == "True") if isinstance(old, bool) else type(old)(value)
  grn_main.validate_config(config, "train")
  assert config.mesh.fsdp == -1 and config.mesh.data == 1


def test_a_stopped_run_passes_exit_status_75_through_and_says_so(tmp_path):
  fake_python = tmp_path / "py"
  fake_python.write_text("#!/bin/sh\nexit 75\n")
  fake_python.chmod(0o755)
  proc = subprocess.run(["bash", str(LAUNCH / "local.sh"), "tiny", f"--python={fake_python}",
                         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=60)
  assert proc.returncode == 75
  assert "stopped by a signal after saving its work (exit status 75)" in proc.stderr
  fake_python.write_text("#!/bin/sh\nexit 3\n")
  proc = subprocess.run(["bash", str(LAUNCH / "local.sh"), "tiny", f"--python={fake_python}",
                         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=60)
  assert proc.returncode == 3 and "stopped by a signal" not in proc.stderr


def dry_run_output(script: str, *args: str, env: dict[str, str] | None = None):
  proc = subprocess.run(["bash", str(LAUNCH / script), "--dry-run", *args], cwd="/",
                        env={**os.environ, **(env or {})}, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout, proc.stderr


def test_pod_commands_print_the_slice_the_memory_table_says_the_job_needs():
  out, err = dry_run_output("tpu_vm.sh", "run", "--zone=z", "--bucket=gs://b",
                            "--accelerator-type=v5p-8", "--config=configs/c2i.py:variant=G")
  assert "# slice: configs/c2i.py:variant=G needs v5p-64 or larger" in out
  assert "v5p-8 is smaller than the v5p-64" in err
  out, err = dry_run_output("tpu_vm.sh", "all", "--zone=z", "--bucket=gs://b",
                            "--accelerator-type=v5p-128", "--config=configs/c2i.py:variant=L")
  assert "needs v5p-32 or larger" in out and not err
  out, _ = dry_run_output("xpk_multislice.sh", "submit", "--bucket=gs://b", "--zone=z",
                          "--project=p", "--tpu-type=v5p-128", "--num-slices=4")
  assert "configs/c2i.py:variant=B needs v5p-16 or larger per slice" in out
  assert "uses 4 x v5p-128" in out
  out, _ = dry_run_output("tpu_vm.sh", "run", "--zone=z", "--bucket=gs://b",
                          "--config=configs/t2iv.py:variant=2B,task=t2v")
  assert "has no row for configs/t2iv.py" in out and "python -m grn_jax.aot" in out
