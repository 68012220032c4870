"""The app's engine: generation equals the C2I sampler, no recompiles, edits keep labels exactly."""

import jax
import numpy as np
import pytest

from grn_jax.app import canvas
from grn_jax.app.engine import Request
from grn_jax.sampling import c2i
from tests.app import tiny


@pytest.fixture(scope="module")
def engine():
  return tiny.tiny_engine(num_samples=2)


def _request(**kw):
  base = dict(condition=3, num_steps=3, cfg_scale=1.0, temperature=1.0, adaptive=False, seed=0,
              animate=False)
  base.update(kw)
  return Request(**base)


def test_generation_is_the_c2i_sampler_and_never_recompiles(engine):
  result = engine.generate(_request(cfg_scale=2.0))
  reference = c2i.sample(engine.family.config, engine.params, np.full(2, 3, np.int32),
                         jax.random.key(0), settings=engine.family.settings(2.0, 1.0))
  np.testing.assert_array_equal(result.labels, reference.labels)
  np.testing.assert_array_equal(result.decoded, engine.decode(result.labels))
  np.testing.assert_array_equal(result.steps, [3, 3])
  assert result.regenerate.all() and result.trace is None
  # Guidance, temperature, seed and class are traced: a second click compiles nothing.
  with tiny.count_compiles() as compiles:
    again = engine.generate(_request(cfg_scale=2.0))
    other = engine.generate(_request(condition=7, seed=5, cfg_scale=3.5, temperature=0.7))
  assert not compiles
  np.testing.assert_array_equal(again.labels, result.labels)
  assert (other.labels != result.labels).any()


def test_animation_trace_and_adaptive_steps(engine):
  result = engine.generate(_request(animate=True, adaptive=True))
  low, high = engine.family.defaults["steps_range"]
  assert ((low <= result.steps) & (result.steps <= high)).all()
  previews = result.trace["input_images"]
  assert previews.dtype == np.uint8 and previews.shape[1:] == (2, 32, 32, 3)
  # The last preview of the prediction is the result itself.
  last = result.steps[0] - 1
  np.testing.assert_array_equal(result.trace["pred_images"][last, 0], result.decoded[0])


def test_inpainting_keeps_the_labels_outside_and_changes_inside(engine):
  source = engine.generate(_request())
  regenerate = np.array([[True, False], [False, False]])
  plan = canvas.inpaint_plan(source.labels[0], source.pixels[0], regenerate, engine.grid)
  with tiny.count_compiles() as first:
    edited = engine.edit(plan, _request(), keep_pixels=True)
  with tiny.count_compiles() as second:
    decoded_only = engine.edit(plan, _request(), keep_pixels=False)
  assert first and not second                 # the editing program compiles once
  kept = ~regenerate
  assert (edited.labels[:, kept] == source.labels[0][kept]).all()
  assert (edited.labels[:, regenerate] != source.labels[0][regenerate]).any(axis=(1, 2)).all()
  # keep_pixels: the kept tokens' patches are the source pixels, bit for bit; the regenerated
  # patch is the decode of the new labels.
  outside = canvas.patch_mask(kept)
  assert (edited.pixels[:, outside] == source.pixels[0][outside]).all()
  assert (edited.pixels[:, ~outside] == edited.decoded[:, ~outside]).all()
  np.testing.assert_array_equal(edited.decoded, engine.decode(edited.labels))
  # Without it, every pixel is decoded from the labels: the decoder sees every token, so the
  # kept patches move with the regenerated one (which is why keep_pixels exists).
  np.testing.assert_array_equal(decoded_only.labels, edited.labels)
  np.testing.assert_array_equal(decoded_only.pixels, decoded_only.decoded)
  assert (decoded_only.pixels[:, outside] != source.pixels[0][outside]).any()


def test_outpainting_grows_the_canvas(engine):
  source = engine.generate(_request())
  plan = canvas.outpaint_plan(source.labels[0], source.pixels[0], "right", 1, engine.grid)
  result = engine.edit(plan, _request(seed=4))
  assert result.labels.shape == (2, 2, 3, 4) and result.pixels.shape == (2, 32, 48, 3)
  np.testing.assert_array_equal(result.labels[:, :, :2], np.broadcast_to(
      source.labels[0], (2,) + source.labels[0].shape))
  np.testing.assert_array_equal(result.decoded, engine.decode(result.labels))
  assert (result.pixels[:, :, :32] == source.pixels[0]).all()
  # And once more, to the left of the strip: the window sees the first two columns.
  strip = canvas.outpaint_plan(result.labels[0], result.pixels[0], "left", 1, engine.grid)
  longer = engine.edit(strip, _request(seed=5))
  assert longer.labels.shape == (2, 2, 4, 4)
  np.testing.assert_array_equal(longer.labels[:, :, 1:], np.broadcast_to(
      result.labels[0], (2,) + result.labels[0].shape))


def test_upload_round_trip_and_request_errors(engine):
  source = engine.generate(_request())
  labels = engine.encode(source.decoded[0])
  assert labels.shape == (2, 2, 4) and labels.dtype == np.int32
  assert labels.min() >= 0 and labels.max() < 16
  np.testing.assert_array_equal(engine.encode(source.decoded[0]), labels)
  with pytest.raises(ValueError, match="fit uploads"):
    engine.encode(np.zeros((64, 64, 3), np.uint8))
  for bad, match in [(dict(num_steps=0), "steps"), (dict(temperature=0.0), "temperature"),
                     (dict(cfg_scale=-1.0), "guidance"), (dict(seed=-1), "seed"),
                     (dict(condition=10), "class must be 0 .. 9"),
                     (dict(condition="three"), "class must be a number")]:
    with pytest.raises(ValueError, match=match):
      engine.generate(_request(**bad))
