"""Editing through fixed labels: the causal tokenizer's frame 0, image-to-video, continuation,
inpainting and outpainting for C2I and T2I, pixel masks on the latent grid."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tokenizer as tokenizer_configs
from grn_jax import tokenizer_io
from grn_jax.sampling import c2i
from grn_jax.sampling import editing
from grn_jax.sampling import t2iv
from tests.sampling.test_c2i import tiny as c2i_tiny  # pylint: disable=unused-import
from tests.sampling.test_t2iv import SHAPE, tiny as t2iv_tiny  # pylint: disable=unused-import


def test_an_image_is_exactly_latent_frame_zero_of_a_video_that_starts_with_it():
  cfg = tokenizer_configs.tokenizer_config("tiny")
  cfg.random_init = True
  module, params = tokenizer_io.load_tokenizer(cfg, seed=0)
  rng = np.random.default_rng(0)
  video = rng.integers(0, 256, (2, 9, 32, 48, 3)).astype(np.uint8)
  image_labels = tokenizer_io.encode_labels(module, params, video[:, 0], 4, "bit")
  video_labels = tokenizer_io.encode_labels(module, params, video, 4, "bit")
  assert video_labels.shape == (2, 3, 2, 3, 16)
  np.testing.assert_array_equal(image_labels, video_labels[:, 0])
  np.testing.assert_allclose(tokenizer_io.encode_latents(module, params, video[:, 0]),
                             tokenizer_io.encode_latents(module, params, video)[:, 0], atol=1e-6)
  # The streamed (frame_chunk) encoder too.
  streamed = tokenizer_io.load_tokenizer(cfg.copy_and_resolve_references(), seed=0)[0].clone(
      frame_chunk=1)
  np.testing.assert_array_equal(
      tokenizer_io.encode_labels(streamed, params, video, 4, "bit")[:, 0], image_labels)
  fixed, mask = editing.image_to_video(image_labels, frames=5)
  assert fixed.shape == mask.shape == (2, 5, 2, 3, 16)
  np.testing.assert_array_equal(fixed[:, 0], image_labels)
  assert mask[:, 0].all() and not mask[:, 1:].any()


def test_image_to_video_and_continuation_through_the_t2iv_sampler(t2iv_tiny):
  model, params, encode, text = t2iv_tiny
  text_c, text_u = encode(params, *text([3, 4], 4)), encode(params, *text([2], 2))
  sample = t2iv.make_sampler(model, shape=SHAPE, h_div_w=1.0, num_steps=4, schedule_steps=4)
  settings = dict(cfg_scale=2.0, cfg_interval=0.0, temperature=1.0, snr_shift=1.0)
  image = np.random.default_rng(2).integers(0, 2, (2,) + SHAPE[1:] + (16,))
  fixed, mask = editing.image_to_video(image, SHAPE[0])
  out = sample(params, text_c, text_u, settings, jax.random.key(0), fixed_labels=fixed,
               fixed_mask=mask)
  np.testing.assert_array_equal(np.asarray(out.labels)[:, 0], image)
  free = sample(params, text_c, text_u, settings, jax.random.key(0))
  assert (np.asarray(free.labels)[:, 0] != image).any()
  fixed, mask = editing.continue_video(np.asarray(out.labels), SHAPE[0], keep=1)
  again = sample(params, text_c, text_u, settings, jax.random.key(5), fixed_labels=fixed,
                 fixed_mask=mask)
  np.testing.assert_array_equal(np.asarray(again.labels)[:, 0], image)
  assert (np.asarray(again.labels)[:, 1] != np.asarray(out.labels)[:, 1]).any()
  with pytest.raises(ValueError, match="keep"):
    editing.continue_video(np.asarray(out.labels), 4, keep=3)


def test_c2i_inpainting_and_outpainting(c2i_tiny):
  config, params = c2i_tiny
  classes = np.array([2, 7], np.int32)
  source = np.asarray(c2i.sample(config, params, classes, jax.random.key(3)).labels)
  region = np.zeros((4, 4), bool)
  region[1:3, 1:3] = True
  fixed, mask = editing.inpaint(source, region)
  out = np.asarray(c2i.sample(config, params, classes, jax.random.key(4), fixed_labels=fixed,
                              fixed_mask=jnp.asarray(mask)).labels)
  np.testing.assert_array_equal(out[:, ~region], source[:, ~region])
  assert (out[:, region] != source[:, region]).any()
  # Outpainting on the model's one grid: shift left by one token and extend on the right.
  fixed, mask = editing.outpaint(source, (4, 4), (0, -1))
  out = np.asarray(c2i.sample(config, params, classes, jax.random.key(4), fixed_labels=fixed,
                              fixed_mask=jnp.asarray(mask)).labels)
  np.testing.assert_array_equal(out[:, :, :3], source[:, :, 1:])
  assert not mask[:, :, 3].any()
  with pytest.raises(ValueError, match="overlap"):
    editing.outpaint(source, (4, 4), (0, 4))


def test_t2i_inpainting_and_outpainting(t2iv_tiny):
  model, params, encode, text = t2iv_tiny
  text_c, text_u = encode(params, *text([3], 3)), encode(params, *text([2], 2))
  settings = dict(cfg_scale=2.0, cfg_interval=0.0, temperature=1.0, snr_shift=1.0)
  image = t2iv.make_sampler(model, shape=(1, 2, 3), h_div_w=1.0, num_steps=3, schedule_steps=3)
  source = np.asarray(image(params, text_c, text_u, settings, jax.random.key(0)).labels)
  region = editing.latent_region(np.pad(np.ones((16, 16), bool), ((16, 0), (0, 32))))
  np.testing.assert_array_equal(region, [[False, False, False], [True, False, False]])
  fixed, mask = editing.inpaint(source, region)
  out = np.asarray(image(params, text_c, text_u, settings, jax.random.key(1), fixed_labels=fixed,
                         fixed_mask=mask).labels)
  np.testing.assert_array_equal(out[:, :, ~region], source[:, :, ~region])
  assert (out[:, :, region] != source[:, :, region]).any()
  # Outpainting to a larger grid: the 2x3 image in the middle of 4x5, the border refined.
  wide = t2iv.make_sampler(model, shape=(1, 4, 5), h_div_w=0.8, num_steps=3, schedule_steps=3)
  fixed, mask = editing.outpaint(source, (4, 5), (1, 1))
  out = np.asarray(wide(params, text_c, text_u, settings, jax.random.key(1), fixed_labels=fixed,
                        fixed_mask=mask).labels)
  np.testing.assert_array_equal(out[:, :, 1:3, 1:4], source)
  assert mask.sum() == source.size and out.shape == (1, 1, 4, 5, 16)
  with pytest.raises(ValueError, match="stride"):
    editing.latent_region(np.ones((20, 16), bool))
