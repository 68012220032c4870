"""The refinement loop: keep semantics, adaptive budgets, guidance skipping, compiles."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.sampling import refine
from tests.sampling.scripted_model import ScriptedModel


def _spec(**kw):
  base = dict(label_shape=(3, 3, 2), label_classes=4, null_class=5, hbq_rounds=2,
              label_mode="ind", num_steps=6)
  base.update(kw)
  return refine.SamplerSpec(**base)


def test_keep_semantics_and_last_step_returns_prediction():
  model = ScriptedModel((3, 3, 2), 4, [50.0] * 6)  # near-deterministic predictions
  spec = _spec(trace=True)
  out = jax.jit(refine.make_sampler(model, spec))(None, jnp.array([0, 1, 2]), jax.random.key(0),
                                                  refine.SamplerSettings())
  target = (np.array([0, 1, 2])[:, None, None, None] + np.arange(18).reshape(3, 3, 2)) % 4
  np.testing.assert_array_equal(out.labels, target)
  np.testing.assert_array_equal(out.steps, 6)
  labels, keep = np.asarray(out.trace["labels"]), np.asarray(out.trace["keep"])
  rand = np.asarray(out.trace["random_labels"])
  np.testing.assert_array_equal(labels[0], rand)
  for i in range(6):  # after step i: kept labels = prediction, others = ORIGINAL random labels
    np.testing.assert_array_equal(labels[i + 1], np.where(keep[i], target, rand))
    np.testing.assert_array_equal(np.asarray(out.trace["pred"])[i], target)
  assert keep[-1].all()  # t_next = 1 at the last step: output = prediction
  np.testing.assert_allclose(np.asarray(out.trace["keep_ratio"])[:, 0], np.arange(6) / 6,
                             atol=1e-6)
  fractions = keep[:-1].mean(axis=(1, 2, 3, 4))
  assert np.all(np.diff(fractions) > -0.35)  # grows with t_next = (i+1)/6 (noisy at 54 labels)
  maps = {k: np.asarray(v) for k, v in refine.refinement_maps(out.trace).items()}
  np.testing.assert_array_equal(maps["filled"] | maps["kept"], keep)
  np.testing.assert_array_equal(maps["filled"][0], keep[0])  # step 0: everything was random
  np.testing.assert_array_equal(maps["erased"][1:], keep[:-1] & ~keep[1:])
  assert not (maps["filled"] & maps["kept"]).any() and not (maps["erased"] & keep).any()


def test_last_step_keeps_the_tempered_sample_statistics():
  # One step: t = 0 input, t_next = 1 -> the output is a plain sample of softmax(logits / tau).
  model = ScriptedModel((8, 8, 4), 4, [1.5] * 10)
  sampler = jax.jit(refine.make_sampler(model, _spec(label_shape=(8, 8, 4), num_steps=1)))
  y = jnp.zeros((64,), jnp.int32)
  for tau in (0.5, 2.0):
    out = sampler(None, y, jax.random.key(1), refine.SamplerSettings(temperature=tau))
    target = np.arange(256).reshape(8, 8, 4) % 4
    hit = float((np.asarray(out.labels) == target).mean())
    p = np.exp(1.5 / tau) / (np.exp(1.5 / tau) + 3)
    assert abs(hit - p) < 0.01, (tau, hit, p)


def test_confidence_keeping_keeps_the_most_confident():
  logp = jnp.log(jnp.array([[0.9, 0.2, 0.5, 0.7]]))
  keep = refine._keep_mask(None, logp, jnp.array([0.5]), "confidence")  # pylint: disable=protected-access
  np.testing.assert_array_equal(keep, [[True, False, False, True]])
  model = ScriptedModel((3, 3, 2), 4, [2.0] * 6)
  out = jax.jit(refine.make_sampler(model, _spec(keep_mode="confidence", trace=True)))(
      None, jnp.array([0, 1]), jax.random.key(0), refine.SamplerSettings())
  kept = np.asarray(out.trace["keep"]).reshape(6, 2, -1).sum(-1)
  np.testing.assert_array_equal(kept[:, 0], np.round(np.arange(1, 7) / 6 * 18))


def test_changing_traced_settings_never_recompiles():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 6)
  sampler = jax.jit(refine.make_sampler(model, _spec()))
  y, key = jnp.array([0, 1]), jax.random.key(0)
  sampler(None, y, key, refine.SamplerSettings(cfg_scale=2.0, temperature=1.0))
  before = sampler._cache_size()  # pylint: disable=protected-access
  for scale, low, temp in [(3.0, 0.4, 0.7), (1.0, 0.0, 1.3), (2.5, -1.0, 2.0)]:
    sampler(None, y, key, refine.SamplerSettings(cfg_scale=scale, cfg_low=low, temperature=temp,
                                                 entropy_k=3.0, schedule_shift=2.0))
  assert sampler._cache_size() == before == 1  # pylint: disable=protected-access


def test_unconditional_pass_skipped_outside_the_interval():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 6)
  sampler = jax.jit(refine.make_sampler(model, _spec(num_steps=10)))
  y, key = jnp.array([0, 1]), jax.random.key(0)
  # interval (0.44, 1): t in {0, .1, ..., .9} -> guided at .5 .. .9 = 5 steps of 10.
  out = sampler(None, y, key, refine.SamplerSettings(cfg_scale=2.0, cfg_low=0.44, cfg_high=1.0))
  assert int(out.nfe) == 2 * (5 * 1 + 5 * 2)
  np.testing.assert_array_equal(out.row_nfe, [15, 15])
  out = sampler(None, y, key, refine.SamplerSettings(cfg_scale=1.0))
  assert int(out.nfe) == 2 * 10


def test_adaptive_budgets_follow_entropy_and_freeze_finished_rows():
  # Class 0: confident (low entropy) -> few steps; class 1: flat logits -> many steps.
  model = ScriptedModel((3, 3, 2), 4, [8.0, 0.0])
  spec = _spec(num_steps=10, adaptive=True, warmup_steps=2, min_steps=4, max_steps=16,
               trace=True)
  settings = refine.SamplerSettings(entropy_k=20.0, entropy_b=-5.0)
  out = jax.jit(refine.make_sampler(model, spec))(None, jnp.array([0, 1]), jax.random.key(3),
                                                  settings)
  logits = model(None, jnp.zeros((2, 3, 3, 2), jnp.int32), None, jnp.array([0, 1]))
  entropy = np.asarray(refine.normalized_entropy(logits))
  assert entropy[1] == pytest.approx(1.0, abs=1e-6) and entropy[0] < 0.01
  # after_warmup convention: total = clip(round(k H + b) + warmup, min, max) -> [4, 16].
  np.testing.assert_array_equal(out.steps, [4, 16])
  np.testing.assert_allclose(out.entropy, entropy, atol=1e-6)
  active = np.asarray(out.trace["active"])
  np.testing.assert_array_equal(active.sum(0), [4, 16])
  labels, keep = np.asarray(out.trace["labels"]), np.asarray(out.trace["keep"])
  # Row 0 finished after 4 steps: its labels never change afterwards (frozen), all kept.
  for i in range(4, 17):
    np.testing.assert_array_equal(labels[i, 0], labels[4, 0])
  assert keep[3:, 0].all()
  np.testing.assert_array_equal(np.asarray(out.trace["pred"])[4:, 0],
                                np.broadcast_to(out.labels[0], (12, 3, 3, 2)))
  assert int(out.nfe) == 4 * 2 + 12 and list(np.asarray(out.row_nfe)) == [4, 16]
  np.testing.assert_array_equal(out.labels[0], np.arange(18).reshape(3, 3, 2) % 4)
  # Stretched schedule of row 0: warm-up on the 10-step grid, then to t = 1 in 2 more steps.
  np.testing.assert_allclose(np.asarray(out.trace["keep_ratio"])[:4, 0],
                             [0, .1, .2, .2 + .8 / 2], atol=1e-6)
  # 'total' convention: the same k, b count the warm-up.
  total_spec = dataclasses.replace(spec, entropy_budget="total")
  out = jax.jit(refine.make_sampler(model, total_spec))(None, jnp.array([0, 1]),
                                                        jax.random.key(3), settings)
  np.testing.assert_array_equal(out.steps, [4, 15])


def test_budget_from_entropy_official_constants():
  spec = _spec(num_steps=50, adaptive=True, warmup_steps=5, min_steps=10, max_steps=50)
  settings = refine.SamplerSettings().as_arrays()
  h = jnp.array([0.70, 0.774, 0.80, 0.845, 0.95])
  # GRN-SPEC F.4 examples: H=0.80 -> remainder 16 -> 21 steps; 0.845 -> 35 -> 40; low -> 10.
  np.testing.assert_array_equal(refine.budget_from_entropy(h, spec, settings),
                                [10, 10, 21, 40, 50])


def test_per_row_keys_make_rows_independent_of_their_batch():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 10)
  sampler = jax.jit(refine.make_sampler(model, _spec(num_steps=3)))
  classes = jnp.arange(8) % 10
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(8))
  full = sampler(None, classes, keys, refine.SamplerSettings(cfg_scale=2.0)).labels
  part = sampler(None, classes[2:6], keys[2:6], refine.SamplerSettings(cfg_scale=2.0)).labels
  np.testing.assert_array_equal(np.asarray(full)[2:6], part)
  with pytest.raises(ValueError, match="one per row"):
    sampler(None, classes, keys[:3], refine.SamplerSettings())
  with pytest.raises(TypeError, match="typed PRNG keys"):
    sampler(None, classes, jax.random.PRNGKey(0), refine.SamplerSettings())


def test_spec_validation():
  with pytest.raises(ValueError, match="keep_mode"):
    _spec(keep_mode="best")
  with pytest.raises(ValueError, match="warmup_steps"):
    _spec(adaptive=True, warmup_steps=5, min_steps=4, max_steps=10)
