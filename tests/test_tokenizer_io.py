"""The tokenizer I/O: the uint8 rule, loading (params dir, random init, errors), round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from configs import tokenizer as tokenizer_configs
from grn_jax import checkpointing
from grn_jax import hbq
from grn_jax import tokenizer_io


def _exact_half(k: int) -> np.float32:
  """A float32 x with (x + 1) / 2 * 255 == k + 0.5 exactly in float32 arithmetic."""
  x = np.float32((k + 0.5) / 127.5 - 1)
  for _ in range(100):
    pixel = (x + np.float32(1)) / np.float32(2) * np.float32(255)
    if pixel == np.float32(k + 0.5):
      return x
    x = np.nextafter(x, np.float32(np.inf if pixel < k + 0.5 else -np.inf))
  raise AssertionError(f"no float32 maps to exactly {k}.5")


def test_to_uint8_rounds_half_to_even_and_clips():
  ks = (100, 101, 253, 254)
  x = np.array([_exact_half(k) for k in ks], np.float32)
  # The premise holds in jax's arithmetic too: the scaled values are exact halves.
  np.testing.assert_array_equal((jnp.asarray(x) + 1) / 2 * 255, np.array(ks) + 0.5)
  # Half to even (np.round, the official C2I evaluation): 100.5 -> 100, 101.5 -> 102, ...
  np.testing.assert_array_equal(tokenizer_io.to_uint8(x), [100, 102, 254, 254])
  # Half-up, floor(v + 0.5), differs exactly there (for even k).
  np.testing.assert_array_equal(np.floor((x + 1) / 2 * 255 + 0.5), [101, 102, 254, 255])
  edges = np.array([-3.0, -1.0, -0.999, 0.0, 0.999, 1.0, 2.5], np.float32)
  out = tokenizer_io.to_uint8(edges)
  assert out.dtype == jnp.uint8
  # -0.999 -> 0.1275 -> 0; 0.0 -> 127.5 -> 128 (even); 0.999 -> 254.87 -> 255; clipped ends.
  np.testing.assert_array_equal(out, [0, 0, 0, 128, 255, 255, 255])


def test_from_uint8_is_the_inverse_on_every_pixel_value():
  pixels = np.arange(256, dtype=np.uint8)
  x = tokenizer_io.from_uint8(pixels)
  assert x.dtype == jnp.float32 and float(x[0]) == -1.0 and float(x[255]) == 1.0
  np.testing.assert_allclose(x, pixels / 127.5 - 1, rtol=0, atol=2.5e-7)  # float32: 2 ulps
  np.testing.assert_array_equal(tokenizer_io.to_uint8(x), pixels)


def test_load_errors_name_the_field_and_the_fix(tmp_path):
  cfg = tokenizer_configs.tokenizer_config("tiny")
  assert cfg.checkpoint == "" and not cfg.random_init
  with pytest.raises(ValueError, match="checkpoint is empty.*tokenizer.random_init=True"):
    tokenizer_io.load_tokenizer(cfg)
  for path in ("hf://bytedance-research/GRN/HBQ_image_tokenizer_16dim_M4.ckpt",
               str(tmp_path / "tok.pth")):
    cfg.checkpoint = path
    with pytest.raises(ValueError, match="PyTorch file; convert it first.*--kind=tokenizer"):
      tokenizer_io.load_tokenizer(cfg)
  cfg.checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="no params checkpoint"):
    tokenizer_io.load_tokenizer(cfg)
  config = c2i_configs.get_config("variant=tiny")
  config.tokenizer.latent_dim = 8
  with pytest.raises(ValueError, match="config.tokenizer.latent_dim=8 != config.model.latent_dim"):
    tokenizer_io.check_latent_dim(config)


@pytest.fixture(scope="module")
def random_tokenizer():
  cfg = tokenizer_configs.tokenizer_config("tiny")
  cfg.random_init = True
  module, params = tokenizer_io.load_tokenizer(cfg, seed=3)
  return cfg, module, params


def test_random_init_is_seeded_and_has_both_halves(random_tokenizer):
  cfg, _, params = random_tokenizer
  assert {"encoder", "decoder"} <= set(params)
  _, again = tokenizer_io.load_tokenizer(cfg, seed=3)
  _, other = tokenizer_io.load_tokenizer(cfg, seed=4)
  jax.tree.map(np.testing.assert_array_equal, params, again)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params),
                                                      jax.tree.leaves(other)))


def test_params_dir_round_trip_and_labels(random_tokenizer, tmp_path):
  cfg, module, params = random_tokenizer
  checkpointing.save_params(tmp_path / "tok", jax.device_get(params))
  loaded_cfg = tokenizer_configs.tokenizer_config("tiny")
  loaded_cfg.checkpoint = str(tmp_path / "tok")
  loaded_module, loaded = tokenizer_io.load_tokenizer(loaded_cfg)
  assert loaded_module == module
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))

  pixels = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  encode = tokenizer_io.make_encode_fn(module, 4, "ind")
  labels = np.asarray(encode(loaded, pixels))
  # uint8 input is from_uint8 of it; the labels are HBQ quantized encoder latents.
  np.testing.assert_array_equal(labels, encode(loaded, tokenizer_io.from_uint8(pixels)))
  apply = jax.jit(module.apply, static_argnames="method")
  latent = apply({"params": loaded}, tokenizer_io.from_uint8(pixels), method="encode")
  np.testing.assert_array_equal(labels, hbq.quantize(latent, 4, "ind"))
  assert labels.shape == (5, 2, 2, 4) and labels.dtype == np.int32
  bit_labels = tokenizer_io.make_encode_fn(module, 4, "bit")(loaded, pixels)
  np.testing.assert_array_equal(bit_labels, hbq.quantize(latent, 4, "bit"))

  decode = tokenizer_io.make_decode_fn(module, 4, "ind")
  images = np.asarray(decode(loaded, labels))
  want = apply({"params": loaded}, hbq.dequantize(labels, 4, "ind"), method="decode")
  np.testing.assert_allclose(images, np.clip(want, -1, 1), rtol=0, atol=1e-6)
  assert images.shape == (5, 32, 32, 3) and images.min() >= -1 and images.max() <= 1
  # Fixed-size batches (the last one padded) give the same labels as one big batch.
  np.testing.assert_array_equal(tokenizer_io.batched(encode, loaded, pixels, 2), labels)
  with pytest.raises(ValueError, match="non-empty"):
    tokenizer_io.batched(encode, loaded, pixels[:0], 2)

  # The sampler's decode_fns: hashable (one compiled program per module), uint8 by the rule.
  latent_decode = tokenizer_io.TokenizerDecode(module)
  assert latent_decode == tokenizer_io.TokenizerDecode(module)
  assert hash(tokenizer_io.Uint8Decode(latent_decode)) == hash(
      tokenizer_io.Uint8Decode(tokenizer_io.TokenizerDecode(module)))
  z = hbq.dequantize(labels, 4, "ind")
  np.testing.assert_array_equal(jax.jit(tokenizer_io.Uint8Decode(latent_decode))(loaded, z),
                                tokenizer_io.to_uint8(images))


def test_bad_pixels_and_a_tokenizer_of_another_latent_width_are_refused(random_tokenizer,
                                                                         tmp_path):
  cfg, module, params = random_tokenizer
  for images, error, message in (
      (np.full((1, 32, 32, 3), 200.0, np.float32), ValueError, "look like \\[0, 255\\] pixels"),
      (np.full((1, 32, 32, 3), np.nan, np.float32), ValueError, "NaN"),
      (np.zeros((1, 32, 32, 3), np.int32), TypeError, "uint8 in \\[0, 255\\] or float")):
    with pytest.raises(error, match=message):
      tokenizer_io.encode_latents(module, params, images)
  with pytest.raises(TypeError, match="tokenizer input must be float"):
    module.apply({"params": params}, jnp.zeros((1, 32, 32, 3), jnp.uint8), method="encode")
  checkpointing.save_params(tmp_path / "tok", jax.device_get(params))
  wide = tokenizer_configs.tokenizer_config("tiny")
  wide.update(checkpoint=str(tmp_path / "tok"), latent_dim=2 * cfg.latent_dim)
  with pytest.raises(ValueError, match=r"\(decoder\) do not match.*config.tokenizer \(latent_dim"):
    tokenizer_io.load_tokenizer(wide)
