"""T2I/T2V converter: the official key set and shapes (GRN-PARAM-SHAPES §3) at 2B and tiny,
round trips (unrolled and scanned), block-chunk naming, all-keys-listed errors, the CLI."""


import jax
import numpy as np
import pytest

from configs import t2iv as t2iv_configs
from grn_jax import convert
from grn_jax.convert import common
from grn_jax.convert import t2iv as t2iv_convert
from tests.models import t2iv_reference


def tiny_cfg(**kw):
  cfg = t2iv_configs.model_config("tiny")
  cfg.update(kw)
  return cfg


def official_shapes_of(cfg):
  return t2iv_reference.official_shapes(
      cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.num_kv_heads, cfg.mlp_ratio,
      cfg.block_chunks, cfg.hbq_rounds * cfg.latent_dim, cfg.text_dim)


def test_full_key_set_of_grn_2b():
  cfg = t2iv_configs.model_config("2B")
  table = {e.torch_key: e.torch_shape for e in t2iv_convert._key_table(cfg)}  # pylint: disable=protected-access
  assert len(table) == 319
  assert table == official_shapes_of(cfg)
  # Spot values of GRN-PARAM-SHAPES §3, written out.
  assert table["word_embed.weight"] == (2304, 512)
  assert table["head.proj.weight"] == (512, 2304)
  assert table["text_proj.weight"] == (2304, 4096)
  assert table["block_chunks.6.module.3.mlp.down_proj.weight"] == (2304, 8192)
  assert table["block_chunks.0.module.0.attn.k_norm.weight"] == (128,)
  assert t2iv_convert.block_key_prefix(5, cfg) == "block_chunks.1.module.1"  # 4 per chunk


def test_8b_key_set_has_grouped_kv_heads():
  cfg = t2iv_configs.model_config("8B")
  table = {e.torch_key: e.torch_shape for e in t2iv_convert._key_table(cfg)}  # pylint: disable=protected-access
  assert table == official_shapes_of(cfg)
  assert table["block_chunks.5.module.5.attn.k_proj.weight"] == (1024, 4096)  # 8 kv heads x 128


@pytest.mark.parametrize("scan", [False, True])
def test_round_trip(scan):
  cfg = tiny_cfg(scan_layers=scan)
  sd = random_state_dict(cfg)
  params = convert.t2iv_params_from_torch(sd, cfg)
  if scan:
    assert params["blocks"]["layers"]["attn"]["q_proj"]["kernel"].shape[0] == cfg.depth
  back = convert.t2iv_params_to_torch(params, cfg)
  assert sorted(back) == sorted(sd)
  for key in sd:
    np.testing.assert_array_equal(back[key], sd[key])


def test_layouts_follow_the_official_index_order():
  cfg = tiny_cfg()
  sd = random_state_dict(cfg)
  params = convert.t2iv_params_from_torch(sd, cfg)
  hd = cfg.hidden_size // cfg.num_heads
  block = params["blocks"]["block_3"]  # the last block: chunk 1, module 1
  k = sd["block_chunks.1.module.1.attn.k_proj.weight"]  # [kv_heads * hd, C]
  np.testing.assert_array_equal(block["attn"]["k_proj"]["kernel"][5, 1, 2], k[1 * hd + 2, 5])
  o = sd["block_chunks.1.module.1.attn.o_proj.weight"]  # [C, heads * hd]
  np.testing.assert_array_equal(block["attn"]["o_proj"]["kernel"][3, 4, 7], o[7, 3 * hd + 4])
  head = sd["head.proj.weight"]  # [D * 2, C], output j * 2 + k
  np.testing.assert_array_equal(params["head_proj"]["kernel"][6, 9, 1], head[9 * 2 + 1, 6])


def test_errors_list_every_missing_unexpected_and_misshaped_key():
  cfg = tiny_cfg()
  sd = random_state_dict(cfg)
  del sd["block_chunks.1.module.0.mlp.up_proj.weight"], sd["head.norm.weight"]
  sd["blocks.0.attn.q_proj.weight"] = np.zeros((3, 3), np.float32)
  sd["text_proj.weight"] = np.zeros((5, 5), np.float32)
  with pytest.raises(common.CheckpointMismatchError) as err:
    convert.t2iv_params_from_torch(sd, cfg)
  msg = str(err.value)
  for text in ("block_chunks.1.module.0.mlp.up_proj.weight", "head.norm.weight",
               "unexpected keys: blocks.0.attn.q_proj.weight",
               "text_proj.weight: checkpoint (5, 5)"):
    assert text in msg
  assert err.value.missing == ["head.norm.weight", "block_chunks.1.module.0.mlp.up_proj.weight"]
  # A file written with 4 chunks of 1 block, read as 2 chunks of 2: half the blocks misplaced.
  with pytest.raises(common.CheckpointMismatchError) as err:
    convert.t2iv_params_from_torch(random_state_dict(tiny_cfg(block_chunks=4)), cfg)
  assert "block_chunks 2" in str(err.value) and len(err.value.missing) == 22
  assert "block_chunks.3.module.0.attn.q_proj.weight" in err.value.unexpected
  # Another width: every tensor that depends on it is reported as mis-shaped, in one error.
  with pytest.raises(common.CheckpointMismatchError) as err:
    convert.t2iv_params_from_torch(random_state_dict(tiny_cfg(hidden_size=32)), cfg)
  # all 4 x 11 block tensors and 10 of the 11 others (head.proj.bias [2 D] keeps its shape)
  assert len(err.value.misshaped) == 4 * 11 + 10 and not err.value.missing


def test_torch_tensors_of_any_dtype_are_accepted():
  torch = pytest.importorskip("torch")
  cfg = tiny_cfg()
  sd = random_state_dict(cfg)
  tensors = {k: torch.from_numpy(v).to(torch.bfloat16).requires_grad_() for k, v in sd.items()}
  params = convert.t2iv_params_from_torch(tensors, cfg)
  want = sd["word_embed.weight"].T
  got = params["word_embed"]["kernel"]
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-3)


def test_cli_converts_a_flat_state_dict(tmp_path, offline_hub):
  torch = pytest.importorskip("torch")
  from grn_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from grn_jax.convert import files as cli  # pylint: disable=g-import-not-at-top
  config = t2iv_configs.get_config("variant=tiny")
  sd = random_state_dict(config.model)
  src = tmp_path / "GRN_T2I_tiny.pth"
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, src)
  cli.convert("t2iv", str(src), str(tmp_path / "out"), config)
  restored = checkpointing.restore_params(str(tmp_path / "out"))
  jax.tree.map(np.testing.assert_array_equal, restored,
               convert.t2iv_params_from_torch(sd, config.model))
  with pytest.raises(OSError, match="huggingface-cli download bytedance-research/GRN "
                                    "GRN_T2V_2B.pth"):
    cli.convert("t2iv", "hf://bytedance-research/GRN/GRN_T2V_2B.pth", str(tmp_path / "x"),
                config)


def random_state_dict(cfg, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(shape).astype(np.float32)
          for k, shape in official_shapes_of(cfg).items()}
