"""C2I converter: key mapping round trips, all-keys-listed errors, reading .pth files, the hub."""

import argparse
import sys

import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax.convert import c2i as c2i_convert
from grn_jax.convert import common
from tests.models import test_grn_c2i as helpers


def test_round_trip_and_net_prefix_optional():
  cfg = helpers.tiny_cfg("bit")
  sd = helpers.random_state_dict(cfg)
  assert all(k.startswith("net.") for k in sd)
  params = c2i_convert.c2i_params_from_torch(sd, cfg)
  bare = c2i_convert.c2i_params_from_torch({k[4:]: v for k, v in sd.items()}, cfg)
  back = c2i_convert.c2i_params_to_torch(params, cfg)
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])
  np.testing.assert_array_equal(bare["blocks_post"]["block_0"]["attn"]["qkv"]["kernel"],
                                params["blocks_post"]["block_0"]["attn"]["qkv"]["kernel"])


def test_official_key_count_for_grn_b():
  cfg = c2i_configs.model_config("B")
  keys = [e.torch_key for e in c2i_convert._key_table(cfg)]  # pylint: disable=protected-access
  assert len(keys) == len(set(keys)) == 183  # GRN-SPEC §I: 183 tensors in GRN_ind_B_ep599.pth
  assert "blocks.11.mlp.w3.bias" in keys and "in_context_posemb" in keys


def test_qkv_layout_follows_official_channel_order():
  cfg = helpers.tiny_cfg()
  sd = helpers.random_state_dict(cfg)
  w = sd["net.blocks.0.attn.qkv.weight"]  # [3H, H], out index s*H + head*hd + e
  kernel = c2i_convert.c2i_params_from_torch(sd, cfg)["blocks_pre"]["block_0"]["attn"]["qkv"][
      "kernel"]  # [H, 3, heads, hd]
  hidden, heads = cfg.hidden_size, cfg.num_heads
  hd = hidden // heads
  np.testing.assert_array_equal(kernel[:, 1, 2, 3], w[1 * hidden + 2 * hd + 3])


def test_errors_list_every_missing_unexpected_and_misshaped_key():
  cfg = helpers.tiny_cfg()
  sd = helpers.random_state_dict(cfg)
  del sd["net.blocks.1.mlp.w3.bias"], sd["net.pos_embed"]
  sd["net.extra.weight"] = np.zeros(3, np.float32)
  sd["net.blocks.0.attn.qkv.weight"] = np.zeros((5, 5), np.float32)
  with pytest.raises(common.CheckpointMismatchError) as err:
    c2i_convert.c2i_params_from_torch(sd, cfg)
  msg = str(err.value)
  for key in ("blocks.1.mlp.w3.bias", "pos_embed", "unexpected keys: extra.weight",
              "blocks.0.attn.qkv.weight: checkpoint (5, 5)"):
    assert key in msg
  assert err.value.missing == ["pos_embed", "blocks.1.mlp.w3.bias"]


def test_wrong_label_mode_is_reported_as_misshaped():
  sd = helpers.random_state_dict(helpers.tiny_cfg("ind"))
  with pytest.raises(common.CheckpointMismatchError, match="x_embedder.proj1.weight"):
    c2i_convert.c2i_params_from_torch(sd, helpers.tiny_cfg("bit"))


def test_load_torch_checkpoint_entries_and_pickle_policy(tmp_path):
  torch = pytest.importorskip("torch")
  cfg = helpers.tiny_cfg()
  sd = helpers.random_state_dict(cfg)
  tensors = {k: torch.from_numpy(v) for k, v in sd.items()}
  ema2 = {k: v + 1 for k, v in tensors.items()}
  path = tmp_path / "GRN_tiny.pth"
  torch.save({"model": tensors, "model_ema1": tensors, "model_ema2": ema2, "epoch": 3,
              "args": argparse.Namespace(model="GRN_tiny")}, path)
  with pytest.raises(ValueError, match="trust_pickle"):
    common.load_torch_checkpoint(str(path), kind="c2i")
  loaded = common.load_torch_checkpoint(str(path), kind="c2i", trust_pickle=True)
  np.testing.assert_array_equal(loaded["net.pos_embed"], sd["net.pos_embed"])
  other = common.load_torch_checkpoint(str(path), entry="model_ema2", trust_pickle=True)
  np.testing.assert_array_equal(other["net.pos_embed"], sd["net.pos_embed"] + 1)
  with pytest.raises(KeyError, match="model_ema3"):
    common.load_torch_checkpoint(str(path), entry="model_ema3", trust_pickle=True)
  # Tokenizer-style file: safe loader, 'ema' preferred over 'vae'.
  tok = tmp_path / "tok.ckpt"
  torch.save({"vae": {"a": torch.zeros(2)}, "ema": {"a": torch.ones(2)}}, tok)
  np.testing.assert_array_equal(common.load_torch_checkpoint(str(tok), kind="tokenizer")["a"], 1)


def test_damaged_files_say_what_is_wrong_and_never_suggest_trust_pickle(tmp_path):
  torch = pytest.importorskip("torch")
  good = tmp_path / "good.pth"
  torch.save({"model_ema1": {"w": torch.arange(4096.0)},
              "args": argparse.Namespace(model="tiny")}, good)
  data = good.read_bytes()
  empty, truncated, flipped, html = (tmp_path / n for n in ("e.pth", "t.pth", "f.pth", "h.pth"))
  empty.write_bytes(b"")
  truncated.write_bytes(data[:len(data) // 2])
  position = data.index(np.arange(4096, dtype=np.float32).tobytes()) + 100
  flipped.write_bytes(data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:])
  html.write_bytes(b"<html>rate limited</html>")
  for path, message in ((empty, "is empty"), (truncated, "truncated or damaged"),
                        (flipped, "corrupt: its member .* fails the CRC"),
                        (html, "not a PyTorch checkpoint")):
    for trust in (False, True):
      with pytest.raises(common.DamagedCheckpointError, match=message) as err:
        common.load_torch_checkpoint(str(path), kind="c2i", trust_pickle=trust)
      assert "trust_pickle" not in str(err.value)
  # The intact file still gets the pickle advice, and loads with the flag.
  with pytest.raises(ValueError, match="--trust_pickle"):
    common.load_torch_checkpoint(str(good), kind="c2i")
  assert common.load_torch_checkpoint(str(good), kind="c2i", trust_pickle=True)["w"][5] == 5


def test_missing_file_and_offline_hub_errors(monkeypatch, offline_hub):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    common.resolve_path("/nonexistent/GRN_ind_B_ep599.pth")
  with pytest.raises(OSError, match="huggingface-cli download bytedance-research/GRN "
                                    "GRN_ind_B_ep599.pth"):
    common.resolve_path("hf://bytedance-research/GRN/GRN_ind_B_ep599.pth")
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)
  with pytest.raises(ImportError, match="by hand"):
    common.resolve_path("hf://bytedance-research/GRN/GRN_ind_B_ep599.pth")


def test_cli_convert_writes_params_that_restore_and_run(tmp_path):
  torch = pytest.importorskip("torch")
  from grn_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from grn_jax.convert import files as cli  # pylint: disable=g-import-not-at-top
  config = c2i_configs.get_config("variant=tiny")
  sd = helpers.random_state_dict(config.model)
  src = tmp_path / "GRN_tiny.pth"
  torch.save({"model_ema1": {k: torch.from_numpy(v) for k, v in sd.items()},
              "args": argparse.Namespace(model="tiny")}, src)
  with pytest.raises(ValueError, match="trust_pickle"):
    cli.convert("c2i", str(src), str(tmp_path / "refused"), config)
  assert not (tmp_path / "refused").exists()
  cli.convert("c2i", str(src), str(tmp_path / "out"), config, trust_pickle=True)
  restored = checkpointing.restore_params(str(tmp_path / "out"))
  expected = c2i_convert.c2i_params_from_torch(sd, config.model)
  import jax  # pylint: disable=g-import-not-at-top
  jax.tree.map(np.testing.assert_array_equal, restored, expected)
