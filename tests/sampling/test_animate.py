"""Trajectory previews in the sampler's program and the refinement animation."""

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from grn_jax import hbq
from grn_jax import tokenizer_io
from grn_jax.sampling import animate
from grn_jax.sampling import refine
from grn_jax.sampling.spec import SamplerSettings, SamplerSpec
from tests.sampling.scripted_model import ScriptedModel


def tiny_decode(params, latent):
  """latent [B, h, w, 4] -> 'images' [B, 4h, 4w, 3] in [-1, 1]."""
  del params
  return jnp.repeat(jnp.repeat(latent[..., :3], 4, axis=1), 4, axis=2)


def test_trace_previews_and_animation(tmp_path):
  model = ScriptedModel((3, 3, 4), 4, [3.0, 0.0])
  spec = SamplerSpec(label_shape=(3, 3, 4), label_values=4, hbq_rounds=2, label_mode="ind",
                     num_steps=6, adaptive=True, warmup_steps=2, min_steps=3, max_steps=8,
                     trace=True, trace_previews=True)
  cond = jnp.array([0, 1])
  out = jax.jit(refine.make_sampler(model, spec, tiny_decode))(
      None, cond, jnp.full_like(cond, 5), refine.row_keys(jax.random.key(0), 2),
      SamplerSettings(entropy_k=10.0, entropy_b=-5.0))
  trace = jax.device_get(out.trace)
  steps = np.asarray(out.steps)
  assert steps[0] < steps[1] == 7  # 2 + round(10 H - 5), H = 1 for the flat row
  latent = hbq.dequantize(jnp.asarray(trace["labels"]), 2, "ind")
  expected = np.asarray(tokenizer_io.to_uint8(jax.vmap(lambda z: tiny_decode(None, z))(latent)))
  np.testing.assert_array_equal(trace["input_images"], expected)
  assert trace["input_images"].shape == (9, 2, 12, 12, 3)
  # The last step the loop ran (frozen rows repeat their final prediction).
  np.testing.assert_array_equal(trace["pred_images"][steps.max() - 1],
                                tokenizer_io.to_uint8(tiny_decode(None, hbq.dequantize(
                                    out.labels, 2, "ind"))))
  frames = animate.refinement_frames(trace, steps)
  assert frames.shape == (8, 2 * (12 + animate.HEADER), 36, 3)
  # Final frame: input panel of every row = its decoded final sample.
  np.testing.assert_array_equal(frames[-1, animate.HEADER:animate.HEADER + 12, :12],
                                trace["pred_images"][steps[0] - 1, 0])
  gif, png = animate.write_animation(trace, steps, str(tmp_path / "refine"), columns=4)
  with Image.open(gif) as im:
    assert im.n_frames == 8
  assert Image.open(png).size == (4 * 12, 2 * 2 * 12)
  # Upscaled 2x (nearest): the same frames, every pixel a 2x2 block, headers unscaled.
  big = animate.refinement_frames(trace, steps, scale=2)
  assert big.shape == (8, 2 * (24 + animate.HEADER), 72, 3)
  np.testing.assert_array_equal(big[:, animate.HEADER:animate.HEADER + 24:2, 0:72:2],
                                frames[:, animate.HEADER:animate.HEADER + 12])
  gif, png = animate.write_animation(trace, steps, str(tmp_path / "big"), fps=1000 / 120,
                                     columns=4, scale=2)
  with Image.open(gif) as im:
    assert im.info["duration"] == 120  # 1000 / fps rounded, not truncated to 119
  assert Image.open(png).size == (4 * 24, 2 * 2 * 24)


def test_map_image_colours():
  none = np.zeros((2, 2, 4), bool)
  full = np.ones((2, 2, 4), bool)
  np.testing.assert_array_equal(animate.map_image(none, full, (4, 4))[0, 0], animate.FILLED)
  np.testing.assert_array_equal(animate.map_image(full, none, (4, 4))[3, 3], animate.ERASED)
  np.testing.assert_array_equal(animate.map_image(full, full, (4, 4))[1, 2], animate.KEPT)
  half = np.zeros((1, 1, 2), bool)
  half[..., 0] = True  # one label filled, one still random
  np.testing.assert_array_equal(animate.map_image(np.zeros_like(half), half, (1, 1))[0, 0],
                                np.round((animate.FILLED + animate.RANDOM) / 2))
