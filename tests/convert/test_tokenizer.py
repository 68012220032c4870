"""Official HBQ tokenizer state dicts <-> our params (layouts, all-keys-listed errors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tokenizer as tokenizer_configs
from grn_jax.convert import common
from grn_jax.convert import tokenizer as tok_convert
from grn_jax.models import build_tokenizer


def tiny_cfg():
  return tokenizer_configs.tokenizer_config("tiny")  # dim 8, latent 4, dim_mult (1, 2, 2, 2)


def _residual(out, prefix, cin, cout):
  out[f"{prefix}.residual.0.gamma"] = (cin, 1, 1, 1)
  out[f"{prefix}.residual.2.weight"] = (cout, cin, 3, 3, 3)
  out[f"{prefix}.residual.2.bias"] = (cout,)
  out[f"{prefix}.residual.3.gamma"] = (cout, 1, 1, 1)
  out[f"{prefix}.residual.6.weight"] = (cout, cout, 3, 3, 3)
  out[f"{prefix}.residual.6.bias"] = (cout,)
  if cin != cout:
    out[f"{prefix}.shortcut.weight"] = (cout, cin, 1, 1, 1)
    out[f"{prefix}.shortcut.bias"] = (cout,)


def _middle(out, prefix, c):
  _residual(out, f"{prefix}.middle.0", c, c)
  out[f"{prefix}.middle.1.norm.gamma"] = (c, 1, 1)
  out[f"{prefix}.middle.1.to_qkv.weight"] = (3 * c, c, 1, 1)
  out[f"{prefix}.middle.1.to_qkv.bias"] = (3 * c,)
  out[f"{prefix}.middle.1.proj.weight"] = (c, c, 1, 1)
  out[f"{prefix}.middle.1.proj.bias"] = (c,)
  _residual(out, f"{prefix}.middle.2", c, c)


def official_shapes(cfg) -> dict[str, tuple[int, ...]]:
  """The official WanVAE_ state dict layout (GRN-PARAM-SHAPES §1), written out independently of
  the converter from the module structure of grn/models/hbq_tokenizer.py."""
  z, mult, nrb = cfg.latent_dim, list(cfg.dim_mult), cfg.num_res_blocks
  out = {}
  dims = [cfg.dim * u for u in [1] + mult]
  out["encoder.conv1.weight"], out["encoder.conv1.bias"] = (dims[0], 12, 3, 3, 3), (dims[0],)
  for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
    base = f"encoder.downsamples.{i}.downsamples"
    for j in range(nrb):
      _residual(out, f"{base}.{j}", cin if j == 0 else cout, cout)
    if i != len(mult) - 1:
      out[f"{base}.{nrb}.resample.1.weight"] = (cout, cout, 3, 3)
      out[f"{base}.{nrb}.resample.1.bias"] = (cout,)
      if cfg.temporal_downsample[i]:
        out[f"{base}.{nrb}.time_conv.weight"] = (cout, cout, 3, 1, 1)
        out[f"{base}.{nrb}.time_conv.bias"] = (cout,)
  _middle(out, "encoder", dims[-1])
  out["encoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
  out["encoder.head.2.weight"], out["encoder.head.2.bias"] = (2 * z, dims[-1], 3, 3, 3), (2 * z,)
  out["conv1.weight"], out["conv1.bias"] = (2 * z, 2 * z, 1, 1, 1), (2 * z,)
  out["conv2.weight"], out["conv2.bias"] = (z, z, 1, 1, 1), (z,)
  dims = [cfg.dec_dim * u for u in [mult[-1]] + mult[::-1]]
  t_up = list(cfg.temporal_downsample[::-1])
  out["decoder.conv1.weight"], out["decoder.conv1.bias"] = (dims[0], z, 3, 3, 3), (dims[0],)
  _middle(out, "decoder", dims[0])
  for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
    base = f"decoder.upsamples.{i}.upsamples"
    for j in range(nrb + 1):
      _residual(out, f"{base}.{j}", cin if j == 0 else cout, cout)
    if i != len(mult) - 1:
      out[f"{base}.{nrb + 1}.resample.1.weight"] = (cout, cout, 3, 3)
      out[f"{base}.{nrb + 1}.resample.1.bias"] = (cout,)
      if t_up[i]:
        out[f"{base}.{nrb + 1}.time_conv.weight"] = (2 * cout, cout, 3, 1, 1)
        out[f"{base}.{nrb + 1}.time_conv.bias"] = (2 * cout,)
  out["decoder.head.0.gamma"] = (dims[-1], 1, 1, 1)
  out["decoder.head.2.weight"], out["decoder.head.2.bias"] = (12, dims[-1], 3, 3, 3), (12,)
  return out


def random_state_dict(cfg, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in official_shapes(cfg).items()}


@pytest.mark.parametrize("variant,count", [("image16", 702.69e6), ("video64", 705.69e6)])
def test_released_layouts(variant, count):
  cfg = tokenizer_configs.get_config(f"variant={variant}").tokenizer
  entries = tok_convert._entries(cfg)  # pylint: disable=protected-access
  want = official_shapes(cfg)
  assert len(want) == len(entries) == 196
  assert {e[1]: tuple(e[2]) for e in entries} == want
  assert abs(sum(int(np.prod(s)) for s in want.values()) - count) < 0.01e6


def test_from_torch_places_every_tensor_and_round_trips():
  cfg = tiny_cfg()
  sd = random_state_dict(cfg)
  params = tok_convert.tokenizer_params_from_torch(sd, cfg)
  shapes = jax.eval_shape(build_tokenizer(cfg).init, jax.random.key(0),
                          jnp.zeros((1, 5, 16, 16, 3)))["params"]
  assert jax.tree.map(np.shape, params) == jax.tree.map(lambda a: a.shape, shapes)
  enc, dec = params["encoder"], params["decoder"]
  # Conv3d [out, in, kt, kh, kw] -> [kt, kh, kw, in, out].
  np.testing.assert_array_equal(enc["conv1"]["kernel"][2, 0, 1, 5, 3],
                                sd["encoder.conv1.weight"][3, 5, 2, 0, 1])
  np.testing.assert_array_equal(dec["up_0_time_conv"]["kernel"][1, 0, 0, 2, 9],
                                sd["decoder.upsamples.0.upsamples.2.time_conv.weight"][9, 2, 1, 0, 0])
  # Conv2d [out, in, kh, kw] -> [kh, kw, in, out]; the 1x1x1 convs of WanVAE_.
  np.testing.assert_array_equal(enc["down_1_resample"]["kernel"][0, 2, 4, 7],
                                sd["encoder.downsamples.1.downsamples.1.resample.1.weight"][7, 4, 0, 2])
  np.testing.assert_array_equal(enc["middle_attn"]["to_qkv"]["kernel"][0, 0, 3, 40],
                                sd["encoder.middle.1.to_qkv.weight"][40, 3, 0, 0])
  np.testing.assert_array_equal(enc["conv1_out"]["kernel"][0, 0, 0, 1, 6],
                                sd["conv1.weight"][6, 1, 0, 0, 0])
  np.testing.assert_array_equal(dec["conv2_in"]["bias"], sd["conv2.bias"])
  np.testing.assert_array_equal(dec["up_3_res_0"]["shortcut"]["kernel"][0, 0, 0, :, 1],
                                sd["decoder.upsamples.3.upsamples.0.shortcut.weight"][1, :, 0, 0, 0])
  # RMS_norm gammas [C, 1, 1(, 1)] -> [C].
  np.testing.assert_array_equal(dec["middle_attn"]["norm"]["gamma"],
                                sd["decoder.middle.1.norm.gamma"][:, 0, 0])
  np.testing.assert_array_equal(enc["down_2_res_0"]["norm2"]["gamma"],
                                sd["encoder.downsamples.2.downsamples.0.residual.3.gamma"][:, 0, 0, 0])
  back = tok_convert.tokenizer_params_to_torch(params, cfg)
  assert set(back) == set(sd)
  for key, value in sd.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_mismatches_are_all_listed():
  cfg = tiny_cfg()
  sd = random_state_dict(cfg)
  del sd["conv2.bias"]
  del sd["encoder.middle.1.proj.weight"]
  sd["decoder.head.2.weight"] = sd["decoder.head.2.weight"][:5]
  sd["encoder.extra"] = np.zeros(1, np.float32)
  with pytest.raises(common.CheckpointMismatchError) as err:
    tok_convert.tokenizer_params_from_torch(sd, cfg)
  e = err.value
  assert sorted(e.missing) == ["conv2.bias", "encoder.middle.1.proj.weight"]
  assert e.unexpected == ["encoder.extra"]
  assert [m[0] for m in e.misshaped] == ["decoder.head.2.weight"]
  assert "latent_dim=4" in str(e)
  # A d=16 file read with a d=64 config: the latent-width tensors are named as mis-shaped.
  wide = tiny_cfg()
  wide.latent_dim = 8
  with pytest.raises(common.CheckpointMismatchError, match="conv1.weight"):
    tok_convert.tokenizer_params_from_torch(random_state_dict(cfg), wide)


def test_converted_params_run_and_are_float32():
  cfg = tiny_cfg()
  params = tok_convert.tokenizer_params_from_torch(random_state_dict(cfg), cfg)
  assert {np.asarray(x).dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  tok = build_tokenizer(cfg)
  z = tok.apply({"params": params}, jnp.zeros((1, 16, 16, 3)), method="encode")
  assert z.shape == (1, 1, 1, 4) and bool(jnp.all(jnp.abs(z) <= 1))
