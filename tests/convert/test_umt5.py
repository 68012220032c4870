"""umT5 converter: official key layout, round trips, all-keys-listed errors, bf16 without copies,
the CLI (folder, .pth, hub forms) writing params and tokenizer into one directory."""

import os
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch

from configs import umt5 as umt5_configs
from grn_jax import checkpointing
from grn_jax import models
from grn_jax import sharding
from grn_jax import text
from grn_jax.convert import files as convert_cli
from grn_jax.convert import common
from grn_jax.convert import umt5 as umt5_convert
from tests.models import test_umt5 as model_tests
from tests.text import test_text as text_tests


def official_state_dict(cfg, dtype=torch.float32, seed=0):
  """A state dict in the official T5Encoder layout (keys and shapes written out by hand)."""
  gen = torch.Generator().manual_seed(seed)
  rand = lambda *shape: torch.randn(*shape, generator=gen).to(dtype)  # noqa: E731
  dim, attn, ffn = cfg.dim, cfg.dim_attn, cfg.dim_ffn
  sd = {"token_embedding.weight": rand(cfg.vocab_size, dim)}
  for i in range(cfg.num_layers):
    p = f"blocks.{i}."
    sd.update({p + "norm1.weight": 1 + rand(dim), p + "attn.q.weight": rand(attn, dim),
               p + "attn.k.weight": rand(attn, dim), p + "attn.v.weight": rand(attn, dim),
               p + "attn.o.weight": rand(dim, attn), p + "norm2.weight": 1 + rand(dim),
               p + "ffn.gate.0.weight": rand(ffn, dim), p + "ffn.fc1.weight": rand(ffn, dim),
               p + "ffn.fc2.weight": rand(dim, ffn),
               p + "pos_embedding.embedding.weight": rand(cfg.num_buckets, cfg.num_heads)})
  sd["norm.weight"] = 1 + rand(dim)
  return sd


def test_layout_matches_the_official_linear_weights():
  cfg = model_tests.tiny_config()
  sd = official_state_dict(cfg)
  params = umt5_convert.umt5_params_from_torch(sd, cfg)
  head_dim = cfg.dim_attn // cfg.num_heads
  q = sd["blocks.1.attn.q.weight"].numpy()         # [heads * head_dim, dim], out index n*hd + h
  np.testing.assert_array_equal(params["layer_1"]["q"][5, 2, 3], q[2 * head_dim + 3, 5])
  o = sd["blocks.0.attn.o.weight"].numpy()         # [dim, heads * head_dim]
  np.testing.assert_array_equal(params["layer_0"]["o"][3, 1, 7], o[7, 3 * head_dim + 1])
  gate = sd["blocks.0.ffn.gate.0.weight"].numpy()  # [ffn, dim]
  np.testing.assert_array_equal(params["layer_0"]["gate"][4, 9], gate[9, 4])
  np.testing.assert_array_equal(params["layer_1"]["pos_embedding"],
                                sd["blocks.1.pos_embedding.embedding.weight"].numpy())
  np.testing.assert_array_equal(params["norm"]["scale"], sd["norm.weight"].numpy())
  enc = models.build_umt5(cfg)
  shapes = jax.eval_shape(enc.init, jax.random.key(0), jnp.ones((1, 4), jnp.int32),
                          jnp.ones((1, 4)))
  checkpointing.check_tree_matches(params, nn.unbox(shapes["params"]), "converted")
  back = umt5_convert.umt5_params_to_torch(params, cfg)
  assert sorted(back) == sorted(sd) and len(sd) == 1 + 10 * cfg.num_layers + 1
  for key, value in sd.items():
    np.testing.assert_array_equal(back[key], value.numpy())


def test_round_trip_of_random_params_and_scanned_layout():
  cfg = model_tests.tiny_config(num_layers=3)
  enc = models.build_umt5(cfg)
  params = jax.tree.map(np.asarray, model_tests.random_params(enc))
  sd = umt5_convert.umt5_params_to_torch(params, cfg)
  again = umt5_convert.umt5_params_from_torch(sd, cfg)
  jax.tree.map(np.testing.assert_array_equal, again, params)
  scanned_cfg = model_tests.tiny_config(num_layers=3, scan_layers=True)
  scanned = umt5_convert.umt5_params_from_torch(sd, scanned_cfg)
  np.testing.assert_array_equal(scanned["layers"]["fc1"][2], params["layer_2"]["fc1"])
  ids, mask = model_tests.padded_batch([4, 9], 9, cfg.vocab_size)
  np.testing.assert_allclose(
      np.asarray(models.build_umt5(scanned_cfg).apply({"params": scanned}, ids, mask)),
      np.asarray(enc.apply({"params": params}, ids, mask)), rtol=1e-5, atol=1e-5)
  back = umt5_convert.umt5_params_to_torch(scanned, scanned_cfg)
  for key, value in sd.items():
    np.testing.assert_array_equal(back[key], value)


def test_errors_list_every_missing_unexpected_and_misshaped_key():
  cfg = model_tests.tiny_config()
  sd = official_state_dict(cfg)
  del sd["blocks.1.ffn.fc2.weight"], sd["norm.weight"]
  sd["blocks.0.attn.relative_attention_bias.weight"] = torch.zeros(32, 4)
  sd["blocks.0.attn.q.weight"] = torch.zeros(cfg.dim, cfg.dim)
  with pytest.raises(common.CheckpointMismatchError) as err:
    umt5_convert.umt5_params_from_torch(sd, cfg)
  assert err.value.missing == ["blocks.1.ffn.fc2.weight", "norm.weight"]
  assert err.value.unexpected == ["blocks.0.attn.relative_attention_bias.weight"]
  msg = str(err.value)
  assert f"blocks.0.attn.q.weight: checkpoint ({cfg.dim}, {cfg.dim}), model expects " \
         f"({cfg.dim_attn}, {cfg.dim})" in msg
  # A config of the wrong size: every layer's weights are reported, not just the first.
  with pytest.raises(common.CheckpointMismatchError, match="missing keys: blocks.2.norm1"):
    umt5_convert.umt5_params_from_torch(official_state_dict(cfg),
                                        model_tests.tiny_config(num_layers=3))


def test_bf16_state_dict_converts_without_copies():
  cfg = model_tests.tiny_config(dtype="bfloat16")
  sd = official_state_dict(cfg, torch.bfloat16)
  params = umt5_convert.umt5_params_from_torch(sd, cfg)
  leaves = jax.tree.leaves(params)
  assert {x.dtype for x in leaves} == {np.dtype(ml_dtypes.bfloat16)}
  storage = {k: v.view(torch.int16).numpy() for k, v in sd.items()}
  assert np.shares_memory(params["layer_0"]["q"], storage["blocks.0.attn.q.weight"])
  assert np.shares_memory(params["token_embedding"], storage["token_embedding.weight"])
  np.testing.assert_array_equal(params["layer_0"]["fc2"].astype(np.float32),
                                sd["blocks.0.ffn.fc2.weight"].float().numpy().T)
  # Into a float32 config the same file is cast tensor by tensor (values unchanged).
  params32 = umt5_convert.umt5_params_from_torch(sd, model_tests.tiny_config())
  np.testing.assert_array_equal(params32["layer_0"]["fc2"],
                                params["layer_0"]["fc2"].astype(np.float32))


def _released_folder(tmp_path, cfg, nested=True):
  folder = tmp_path / "umt5-xxl"
  tokenizer_dir = folder / "umt5-xxl" if nested else folder
  tokenizer_dir.mkdir(parents=True)
  sd = official_state_dict(cfg, torch.bfloat16)
  torch.save(sd, folder / umt5_convert.WEIGHTS_FILE)
  text_tests.write_tokenizer_json(tokenizer_dir / "tokenizer.json")
  (tokenizer_dir / "special_tokens_map.json").write_text("{}")
  return folder, sd


def test_cli_converts_a_released_folder_into_params_and_tokenizer(tmp_path):
  config = umt5_configs.get_config("variant=tiny")
  config.text_encoder.dtype = "bfloat16"
  folder, sd = _released_folder(tmp_path, config.text_encoder)
  dst = tmp_path / "converted"
  convert_cli.convert("umt5", str(folder), str(dst), config)
  assert sorted(os.listdir(dst / "tokenizer")) == ["special_tokens_map.json", "tokenizer.json"]
  params = checkpointing.restore_params(dst / "params")
  assert params["layer_1"]["k"].dtype == ml_dtypes.bfloat16
  want = umt5_convert.umt5_params_from_torch(sd, config.text_encoder)
  jax.tree.map(np.testing.assert_array_equal, params, jax.tree.map(np.asarray, want))
  # One directory is enough to encode prompts.
  config.text_encoder.tokenizer_path = str(dst / "tokenizer")
  ids, mask = text.PromptTokenizer.from_config(config.text_encoder)(["a cat", "a cats"])
  out = models.build_umt5(config.text_encoder).apply({"params": params}, ids, mask)
  assert out.shape == (2, 16, config.text_encoder.dim) and np.isfinite(np.asarray(out)).all()
  with pytest.raises(FileExistsError, match="already exists"):
    convert_cli.convert("umt5", str(folder), str(dst), config)


def test_source_forms_and_their_errors(tmp_path, monkeypatch):
  cfg = model_tests.tiny_config()
  folder, _ = _released_folder(tmp_path, cfg, nested=False)
  weights = str(folder / umt5_convert.WEIGHTS_FILE)
  assert umt5_convert.resolve_source(str(folder)) == (weights, str(folder))
  assert umt5_convert.resolve_source(weights) == (weights, str(folder))
  os.remove(folder / "tokenizer.json")
  with pytest.raises(FileNotFoundError, match="no tokenizer files"):
    umt5_convert.resolve_source(str(folder))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    umt5_convert.resolve_source(str(tmp_path / "nowhere"))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match="has no models_t5_umt5-xxl-enc-bf16.pth"):
    umt5_convert.resolve_source(str(empty))
  text_tests.write_tokenizer_json(folder / "tokenizer.json")
  snapshot = types.SimpleNamespace(snapshot_download=lambda repo_id, allow_patterns: str(tmp_path))
  monkeypatch.setitem(sys.modules, "huggingface_hub", snapshot)  # the hub holds umt5-xxl/
  assert umt5_convert.resolve_source("hf://bytedance-research/GRN/umt5-xxl") == (
      weights, str(folder))
  calls = []

  def offline(repo_id, allow_patterns):
    calls.append((repo_id, allow_patterns))
    raise ConnectionError("no network")
  monkeypatch.setitem(sys.modules, "huggingface_hub",
                      types.SimpleNamespace(snapshot_download=offline))
  with pytest.raises(OSError, match="huggingface-cli download bytedance-research/GRN --include "
                     "'umt5-xxl/\\*' --local-dir weights/` .* --src=weights/umt5-xxl"):
    umt5_convert.resolve_source("hf://bytedance-research/GRN/umt5-xxl")
  assert calls == [("bytedance-research/GRN", ["umt5-xxl/**"])]
  monkeypatch.setitem(sys.modules, "huggingface_hub", None)
  with pytest.raises(ImportError, match="grn_jax\\[hub\\]"):
    umt5_convert.resolve_source("hf://bytedance-research/GRN/umt5-xxl")


def test_reading_pickled_and_nested_files(tmp_path):
  cfg = model_tests.tiny_config()
  sd = official_state_dict(cfg)
  path = tmp_path / "nested.pth"
  torch.save({"model": sd, "note": types.SimpleNamespace(step=1)}, path)
  with pytest.raises(ValueError, match="--trust_pickle"):
    umt5_convert.load_state_dict_views(str(path))
  views = umt5_convert.load_state_dict_views(str(path), trust_pickle=True, entry="model")
  assert sorted(views) == sorted(sd)
  with pytest.raises(KeyError, match="has no entry 'ema'"):
    umt5_convert.load_state_dict_views(str(path), trust_pickle=True, entry="ema")


def test_releasing_written_pages_never_changes_data(tmp_path):
  cfg = model_tests.tiny_config()
  sd = official_state_dict(cfg, torch.bfloat16)
  path = tmp_path / "weights.pth"
  torch.save(sd, path)
  views = umt5_convert.load_state_dict_views(str(path))
  mapped = umt5_convert.MappedFile(str(path))
  assert mapped.ranges  # torch.load(mmap=True) maps the file privately
  params = umt5_convert.umt5_params_from_torch(views, cfg)              # views into the map
  params32 = umt5_convert.umt5_params_from_torch(views, model_tests.tiny_config())  # copies
  before = jax.tree.map(np.array, (params, params32))
  for leaf in jax.tree.leaves((params, params32)):
    mapped.release(leaf)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a.astype(np.float32),
                                                          b.astype(np.float32)),
               (params, params32), before)
  assert not umt5_convert.MappedFile(str(tmp_path / "elsewhere.pth")).ranges


def test_prompt_encoder_from_a_converted_directory_compiles_once_per_bucket(tmp_path):
  config = umt5_configs.get_config("variant=tiny")
  folder, _ = _released_folder(tmp_path, config.text_encoder)
  convert_cli.convert("umt5", str(folder), str(tmp_path / "out"), config)
  cfg = config.text_encoder
  with pytest.raises(ValueError, match="text_encoder.checkpoint is empty"):
    text.load_text_encoder(cfg)
  cfg.checkpoint, cfg.tokenizer_path = str(tmp_path / "out/params"), str(tmp_path / "out/tokenizer")
  encoder = text.PromptEncoder.from_config(cfg)
  features, mask = encoder(["a cat", "a cats"])
  assert features.shape == (2, 16, cfg.dim) and features.dtype == jnp.float32
  encoder(["cafÃ©", "a"])                       # same bucket: no new compile
  longer, longer_mask = encoder(["a cat", "a " * 20])  # bucket 32
  assert encoder.forward._cache_size() == 2  # pylint: disable=protected-access
  np.testing.assert_allclose(np.asarray(longer[0, :3]), np.asarray(features[0, :3]),
                             rtol=1e-4, atol=1e-4)  # (unit-variance test weights: large logits)
  assert longer_mask.sum(1).tolist() == [3, 21]
  # Sharded: params restored straight onto the mesh, same features.
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
  sharded = text.PromptEncoder.from_config(cfg, mesh, umt5_configs.sharding_rules())
  assert sharded.params["layer_0"]["fc1"].sharding.spec == jax.sharding.PartitionSpec(
      "fsdp", "tensor")
  np.testing.assert_allclose(np.asarray(sharded(["a cat", "a cats"])[0]),
                             np.asarray(features), rtol=1e-4, atol=1e-4)
