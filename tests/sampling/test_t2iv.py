"""The T2I/T2V sampler: the contract (shapes, replay semantics against a step-by-step transcription
with the real tiny GRN-2B-shaped model), per-row independence with prompts of different lengths,
traced settings (one compilation), abstract lowering, adaptive budgets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import t2iv as t2iv_configs
from grn_jax import hbq
from grn_jax.models import build_t2iv
from grn_jax.sampling import t2iv

SHAPE = (2, 2, 3)  # latent frames, h, w


@pytest.fixture(scope="module")
def tiny():
  cfg = t2iv_configs.model_config("tiny")
  model = build_t2iv(cfg)
  labels = jnp.zeros((1,) + SHAPE + (model.labels_per_token,), jnp.int32)
  features, mask = jnp.zeros((1, 4, cfg.text_dim)), jnp.ones((1, 4), bool)
  params = jax.jit(model.init)(jax.random.key(0), labels, jnp.zeros(1), features, mask)["params"]
  encode = t2iv.encode_text_fn(model)
  rng = np.random.default_rng(0)

  def text(lengths, pad_to):
    feats = rng.standard_normal((len(lengths), pad_to, cfg.text_dim)).astype(np.float32)
    valid = np.arange(pad_to)[None] < np.asarray(lengths)[:, None]
    return feats, valid

  return model, params, encode, text


def reference_loop(model, params, text_c, text_u, replay, w, x, tau, shift, tmax, steps):
  """Step-by-step transcription of the official HEAD loop (GRN-SPEC §F.2, §L), batch 1, with the
  model called directly: (inputs, scale values, P(1), final labels)."""
  apply = lambda z, t, text: model.apply({"params": params}, z, t, text, method="denoise")
  rand = z = replay["init_labels"]
  cur = np.float32(0.0)
  inputs, scales, probs = [], [], []
  for i in range(steps):
    inputs.append(z)
    scales.append(cur)
    lc = np.asarray(apply(z, np.array([cur]), text_c))
    lu = np.asarray(apply(z, np.array([cur]), text_u))
    logits = lu + np.float32(w) * (lc - lu) if (cur >= x and w != 1) else lc
    p = jax.nn.softmax(logits / np.float32(tau), -1)
    probs.append(np.asarray(p[..., 1]))
    u = min(1.0, (i + 1) / (tmax - 1))
    noise = 1.0 - u
    shifted = 1.0 - shift * noise / (1.0 + (shift - 1.0) * noise)
    keep = replay["uniforms"][i] < np.float32(0.999 * (1.0 - np.cos(np.pi / 2 * shifted)))
    z = np.where(keep, replay["samples"][i], rand)
    if abs(cur - 1) < 1e-6:
      break
    cur = np.float32(keep.sum()) / np.float32(keep.size)
  return inputs, scales, probs, replay["samples"][len(inputs) - 1]


def test_replay_is_the_official_loop_step_by_step(tiny):
  model, params, encode, text = tiny
  steps, tmax, dim = 3, 4, model.labels_per_token
  text_c = encode(params, *text([3], 5))
  text_u = encode(params, *text([2], 2))   # another length: padded to the prompt's
  rng = np.random.default_rng(1)
  full = (1,) + SHAPE + (dim,)
  replay = dict(init_labels=rng.integers(0, 2, full).astype(np.int32),
                samples=rng.integers(0, 2, (steps,) + full).astype(np.int32),
                uniforms=rng.random((steps,) + full).astype(np.float32))
  w, x, tau, shift = 3.0, 0.2, 1.1, 1.5
  sample = t2iv.make_sampler(model, shape=SHAPE, h_div_w=1.0, num_steps=steps,
                             schedule_steps=tmax, trace=True)
  out = sample(params, text_c, text_u, dict(cfg_scale=w, cfg_interval=x, temperature=tau,
                                            snr_shift=shift), jax.random.key(0), replay=replay)
  inputs, scales, probs, final = reference_loop(model, params, text_c, text_u, replay, w, x, tau,
                                                shift, tmax, steps)
  trace = jax.device_get(out.trace)
  assert trace.inputs.shape == (steps,) + full and trace.probs.shape == (steps,) + full
  assert trace.scale.shape == (steps, 1) and out.latent.shape == full[:-1] + (4,)
  np.testing.assert_array_equal(trace.inputs, np.stack(inputs))
  np.testing.assert_array_equal(trace.scale[:, 0], np.stack(scales))
  assert 0 < scales[1] < 1 and scales[1] != np.float32(1 - np.cos(np.pi / 2 / 3)) * 0.999
  np.testing.assert_allclose(trace.probs, np.stack(probs), atol=1e-5)
  np.testing.assert_array_equal(out.labels, final)
  np.testing.assert_array_equal(out.latent, hbq.dequantize(final, 4, "bit"))
  # Steps whose scale value is below the threshold x ran the conditional pass only.
  assert int(out.row_nfe[0]) == sum(1 + (s >= x) for s in scales) < 2 * steps


def test_rows_do_not_depend_on_their_batch_and_settings_are_traced(tiny):
  model, params, encode, text = tiny
  feats, mask = text([2, 7, 4], 8)       # three prompts of different lengths, one bucket
  neg = encode(params, *text([3], 3))
  sample = t2iv.make_sampler(model, shape=SHAPE, h_div_w=9 / 16, num_steps=4, schedule_steps=4)
  settings = t2iv.T2IVSettings(cfg_scale=2.0, cfg_interval=0.0, temperature=1.0, snr_shift=1.0)
  key = jax.random.key(3)
  batch = sample(params, encode(params, feats, mask), neg, settings, key)
  assert batch.labels.shape == (3,) + SHAPE + (16,)
  # Row r uses fold_in(key, r): row 0 alone, and row 1 given its own key, match the batch.
  alone = sample(params, encode(params, feats[:1, :2], mask[:1, :2]), neg, settings, key)
  np.testing.assert_array_equal(alone.labels[0], batch.labels[0])
  own_key = jax.random.fold_in(key, 1)[None]
  row1 = sample(params, encode(params, feats[1:2], mask[1:2]), neg, settings, own_key)
  np.testing.assert_array_equal(row1.labels[0], batch.labels[1])
  assert (np.asarray(batch.labels[0]) != np.asarray(batch.labels[2])).any()
  compiled = sample._cache_size()  # pylint: disable=protected-access
  other = sample(params, encode(params, feats, mask), neg,
                 dict(cfg_scale=4.5, cfg_interval=0.3, temperature=0.7, snr_shift=3.0), key)
  assert (np.asarray(other.labels) != np.asarray(batch.labels)).any()
  other = sample(params, encode(params, feats, mask), neg,
                 t2iv.T2IVSettings(cfg_scale=1.5, cfg_interval=0.1, temperature=1.3,
                                   snr_shift=0.5), key)
  other = sample(params, encode(params, feats, mask), neg,
                 dict(cfg_scale=np.float32(1.5), cfg_interval=jnp.float32(0.1), temperature=1,
                      snr_shift=np.float64(0.5)), key)
  assert sample._cache_size() == compiled <= 3  # pylint: disable=protected-access
  assert t2iv.make_sampler(model, shape=SHAPE, h_div_w=9 / 16, num_steps=4,
                           schedule_steps=4) is sample
  with pytest.raises(ValueError, match="missing"):
    sample(params, encode(params, feats, mask), neg, dict(cfg_scale=1.0), key)


def test_lowers_on_abstract_inputs(tiny, new_arrays):
  model, _, _, _ = tiny
  sample = t2iv.make_sampler(model, shape=SHAPE, h_div_w=1.0, num_steps=3, schedule_steps=50)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1,) + SHAPE + (16,), jnp.int32), jnp.zeros(1),
      jnp.zeros((1, 4, 32)), jnp.ones((1, 4), bool))["params"])
  cache = lambda b, l: jax.eval_shape(lambda: jax.tree.map(
      jnp.zeros_like, model.apply({"params": jax.tree.map(jnp.zeros_like, params)},
                                  jnp.zeros((b, l, 32)), jnp.ones((b, l), bool),
                                  method="encode_text")))
  lowered = sample.lower(params, cache(2, 8), cache(1, 4),
                         jax.tree.map(lambda _: jax.ShapeDtypeStruct((), jnp.float32),
                                      t2iv.T2IVSettings()),
                         jax.ShapeDtypeStruct((), jax.random.key(0).dtype))
  assert not new_arrays()
  assert "while" in lowered.as_text()
  assert sample.jitted.lower


def test_adaptive_budgets_follow_the_entropy(tiny):
  model, params, encode, text = tiny
  text_c, text_u = encode(params, *text([3, 5], 5)), encode(params, *text([1], 1))
  sample = t2iv.make_sampler(model, shape=SHAPE, h_div_w=1.0, num_steps=8, schedule_steps=8,
                             adaptive=True, warmup_steps=2, min_steps=3, max_steps=8)
  base = dict(cfg_scale=1.0, cfg_interval=0.0, temperature=1.0, snr_shift=1.0)
  # k = 0: every row runs round(b) + warmup steps; k large: the entropy decides (clipped).
  out = sample(params, text_c, text_u, dict(base, entropy_k=0.0, entropy_b=2.0), jax.random.key(1))
  np.testing.assert_array_equal(out.steps, [4, 4])
  out = sample(params, text_c, text_u, dict(base, entropy_k=100.0, entropy_b=-95.0),
               jax.random.key(1))
  want = np.clip(np.round(100 * np.asarray(out.entropy) - 95) + 2, 3, 8)
  np.testing.assert_array_equal(out.steps, want)
  assert sample._cache_size() == 1  # pylint: disable=protected-access
