"""The prompt modes end to end on the tiny random-weight GRN-2B-shaped model: the command line,
prompt files (skips and errors), videos, resumption, image-to-video, trajectories."""

import json
import os
import subprocess
import sys

import imageio.v3 as iio
import jax
import numpy as np
import pytest
from PIL import Image

from configs import t2iv as t2iv_configs
from grn_jax import main as grn_main
from grn_jax import text
from grn_jax.sampling import t2iv_run

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(pixels="0.06M", num_steps=3, schedule_tmax=3)


def tiny_config(task, **sample):
  config = t2iv_configs.get_config(f"variant=tiny,task={task}")
  config.sample.update(SMALL, **sample)
  config.mesh.data = 1  # one device: batch sizes of 1 and 2
  return config


def test_command_line_prompt_to_image(tmp_path, cheap_xla_flags):
  env = dict(os.environ, XLA_FLAGS=cheap_xla_flags, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  args = [sys.executable, "-m", "grn_jax.main", "--mode=t2i", f"--workdir={tmp_path}",
          "--config=configs/t2iv.py:variant=tiny,task=t2i", "--prompt=a red fox in the snow",
          *(f"--config.sample.{k}={v}" for k, v in SMALL.items())]
  proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "t2i: 1 outputs" in proc.stdout
  record = json.loads((tmp_path / "t2i" / "000000.json").read_text())
  assert record["prompt"] == "a red fox in the snow" and record["files"] == ["000000.png"]
  assert record["steps"] == 3 and record["sample"]["seed"] == 0
  assert record["latent_shape"] == [1, 16, 16]
  with Image.open(tmp_path / "t2i" / "000000.png") as im:
    assert im.size == (256, 256)
    assert np.asarray(im).std() > 0
  proc = subprocess.run(args[:6] + ["--prompt=x", "--image=y.png"] + args[7:], env=env,
                        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode != 0 and "needs --image" not in proc.stderr
  assert "the other modes take none" in proc.stderr


def test_videos_from_a_prompt_file_resume_exactly(tmp_path):
  prompts = tmp_path / "prompts.txt"
  long = " ".join(["word"] * 80)  # > max_length=64 byte tokens: skipped
  prompts.write_text("a cat\n# a comment\n\n" + long + "\na dog running\nthe sea\n")
  config = tiny_config("t2v", prompts=str(prompts), duration=0.25, batch_size=2,
                       trajectory=True, cfg_interval=0.1, h_div_w=1.0)
  out = tmp_path / "t2v"
  summary = grn_main.run("t2v", config, str(tmp_path))
  assert summary["generated"] == 3 and len(summary["trajectories"]) == 6
  records = [json.loads((out / f"{i:06d}.json").read_text()) for i in range(3)]
  assert [r["prompt"] for r in records] == ["a cat", "a dog running", "the sea"]
  frames = iio.imread(out / "000001.mp4")
  assert frames.shape == (5, 256, 256, 3)  # 0.25 s at 16 fps: 5 frames, 2 latent frames
  gif = np.stack([np.asarray(f.convert("RGB")) for f in _frames(out / "000001.gif")])
  assert gif.shape == (5, 256, 256, 3)
  # Kill-and-rerun: output 1 is gone; the rerun writes it again, in another batch, identically.
  for suffix in (".json", ".mp4", ".gif"):
    os.remove(out / f"000001{suffix}")
  config.sample.trajectory = False
  again = grn_main.run("t2v", config, str(tmp_path))
  assert again["start"] == 1 and again["generated"] == 1  # only the missing output
  regif = np.stack([np.asarray(f.convert("RGB")) for f in _frames(out / "000001.gif")])
  np.testing.assert_array_equal(regif, gif)
  assert json.loads((out / "000001.json").read_text())["steps"] == records[1]["steps"]
  # The trajectory's last frame is the output: the same sample, traced.
  assert (out / "000000_refinement.gif").stat().st_size > 0


def _frames(path):
  with Image.open(path) as im:
    for i in range(im.n_frames):
      im.seek(i)
      yield im.copy()


def test_image_to_video(tmp_path):
  image = np.zeros((90, 160, 3), np.uint8)
  image[:, :80] = (200, 30, 30)
  image[45:, 80:] = (30, 30, 200)
  Image.fromarray(image).save(tmp_path / "first.png")
  config = tiny_config("t2v", image=str(tmp_path / "first.png"), prompt="waves", duration=0.25,
                       num_steps=2)
  summary = grn_main.run("i2v", config, str(tmp_path))
  record = json.loads((tmp_path / "i2v" / "000000.json").read_text())
  assert summary["generated"] == 1 and record["h_div_w_template"] == 0.562  # the image's
  assert record["latent_shape"] == [2, 12, 21]
  assert iio.imread(tmp_path / "i2v" / "000000.mp4").shape == (5, 192, 336, 3)
  pixels = t2iv_run.load_image(str(tmp_path / "first.png"), 192, 336)
  assert pixels.shape == (192, 336, 3) and (pixels[0, 0] == (200, 30, 30)).all()


def test_bad_inputs_fail_with_clear_errors(tmp_path):
  tokenizer = text.PromptTokenizer("bytes", 64, (16, 32, 64))
  sample = tiny_config("t2i").sample
  sample.prompts = str(tmp_path / "bad.txt")
  (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
  with pytest.raises(ValueError, match="not UTF-8"):
    t2iv_run.read_prompts(sample, tokenizer)
  (tmp_path / "bad.txt").write_text("# only a comment\n\n")
  with pytest.raises(ValueError, match="no usable prompt"):
    t2iv_run.read_prompts(sample, tokenizer)
  (tmp_path / "bad.txt").write_text("x" * 100 + "\n")
  with pytest.raises(ValueError, match="1 too long"):
    t2iv_run.read_prompts(sample, tokenizer)
  with pytest.raises(ValueError, match="task=t2v"):
    grn_main.run("t2v", tiny_config("t2i", prompt="a"), str(tmp_path))
  with pytest.raises(ValueError, match="needs --image"):
    grn_main.run("i2v", tiny_config("t2v", prompt="a"), str(tmp_path))
  with pytest.raises(ValueError, match="exactly one of --prompt"):
    grn_main.run("t2i", tiny_config("t2i"), str(tmp_path))
  with pytest.raises(ValueError, match="sample.checkpoint is empty"):
    grn_main.run("t2i", tiny_config("t2i", prompt="a", random_init=False), str(tmp_path))
  bad = tiny_config("t2i", prompt="a")
  bad.sample.unlock()
  bad.sample.cfg = 2.0
  with pytest.raises(ValueError, match="unknown fields"):
    grn_main.run("t2i", bad, str(tmp_path))
  assert tokenizer.num_tokens(["ab", "é"]) == [3, 3]  # bytes + EOS
  ids, mask = tokenizer(["ab"])
  np.testing.assert_array_equal(ids[0, :3], [100, 101, 1])
  assert mask.sum() == 3


def test_the_program_lowers_on_abstract_inputs(new_arrays):
  config = tiny_config("t2v", duration=0.25)
  sampler, args, kwargs = t2iv_run.abstract_program(config, "i2v", batch=2, text_length=16,
                                                    negative_length=32)
  lowered = sampler.lower(*args, **kwargs)
  assert not new_arrays()  # nothing concrete: pod-sized configs lower on a CPU
  assert "while" in lowered.as_text()
  assert kwargs["fixed_labels"].shape == (2, 2, 12, 21, 16) and args[2].mask.shape == (1, 32)
  images = lowered.out_info.images  # the frames, decoded inside the program
  assert images.shape == (2, 5, 192, 336, 3) and images.dtype == np.uint8


def test_damaged_or_stale_outputs_are_generated_again(tmp_path):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a cat\na dog\nthe sea\n")
  config = tiny_config("t2i", prompts=str(prompts), batch_size=1)
  out = tmp_path / "t2i"
  grn_main.run("t2i", config, str(tmp_path))
  first = {i: (out / f"{i:06d}.png").read_bytes() for i in range(3)}
  (out / "000000.png").write_bytes(first[0][:100])           # truncated image
  record = json.loads((out / "000002.json").read_text())
  (out / "000002.json").write_text(json.dumps(dict(record, index=7)))  # another output's record
  prompts.write_text("a cat\na red dog\nthe sea\n")             # prompt 1 changed
  again = grn_main.run("t2i", config, str(tmp_path))
  assert again["generated"] == 3 and again["start"] == 0
  assert (out / "000000.png").read_bytes() == first[0]        # the same key: the same image
  assert (out / "000002.png").read_bytes() == first[2]
  assert json.loads((out / "000001.json").read_text())["prompt"] == "a red dog"
  assert grn_main.run("t2i", config, str(tmp_path))["generated"] == 0


def test_fit_entropy_reads_t2i_runs_at_several_budgets(tmp_path):
  from grn_jax.sampling import fit_entropy
  runs = []
  for steps in (2, 3, 4):
    out = tmp_path / f"s{steps}"
    config = tiny_config("t2i", prompts=str(tmp_path / "p.txt"), num_steps=4,
                         schedule_tmax=4, adaptive=True, warmup_steps=1, min_steps=2,
                         max_steps=4, entropy_k=0.0, entropy_b=float(steps - 1),
                         output_dir=str(out), batch_size=2)
    (tmp_path / "p.txt").write_text("a cat\na dog\nthe sea\nrain\n")
    grn_main.run("t2i", config, str(tmp_path))
    runs.append(str(out))
  measured = fit_entropy.pairs_from_runs(runs, tolerance=1e-9)
  np.testing.assert_array_equal(measured["budgets"], [[2] * 4, [3] * 4, [4] * 4])
  assert measured["family"] == "t2iv" and measured["warmup_steps"] == 1
  assert (measured["distance"][2] == 0).all()                  # the reference itself
  entropies = [json.loads((tmp_path / "s2" / f"{i:06d}.json").read_text())["entropy"]
               for i in range(4)]
  np.testing.assert_allclose(measured["entropy"], entropies)
  # At a tolerance of 0 only identical images count: a budget is enough exactly where its
  # image equals the 4-step one.
  same = [[np.array_equal(np.asarray(Image.open(f"{r}/{i:06d}.png")),
                          np.asarray(Image.open(f"{runs[2]}/{i:06d}.png"))) for i in range(4)]
          for r in runs]
  expected = [min(s for s, ok in zip((2, 3, 4), col) if ok) for col in zip(*same)]
  np.testing.assert_array_equal(measured["steps"], expected)
  with pytest.raises(ValueError, match="did not share the warm-up"):
    other = tiny_config("t2i", prompts=str(tmp_path / "p.txt"), num_steps=4, schedule_tmax=4,
                        adaptive=True, warmup_steps=1, min_steps=2, max_steps=4,
                        entropy_k=0.0, entropy_b=3.0, output_dir=str(tmp_path / "seed1"),
                        batch_size=2, seed=1)
    grn_main.run("t2i", other, str(tmp_path))
    fit_entropy.pairs_from_runs([runs[0], str(tmp_path / "seed1")], tolerance=0.1)
