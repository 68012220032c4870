"""The refinement sampler: schedules, guidance, keep semantics, adaptive budgets, compiles."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import c2i as c2i_configs
from grn_jax import sharding
from grn_jax.sampling import api, guidance, refine, schedules


def test_schedules_golden_values():
  u = jnp.array([0.0, 0.25, 0.5, 1.0])
  np.testing.assert_allclose(schedules.keep_ratio(u, "linear"), [0, .25, .5, 1])
  np.testing.assert_allclose(schedules.keep_ratio(u, "cosine"),
                             [0, 1 - np.cos(np.pi / 8), 1 - np.cos(np.pi / 4), 1], atol=1e-7)
  # shift 4: 1 - 4 (1-u) / (1 + 3 (1-u)); u = .5 -> 1 - 2 / 2.5 = 0.2
  np.testing.assert_allclose(schedules.keep_ratio(u, "shifted", 4.0), [0, 1 - 3 / 3.25, .2, 1],
                             atol=1e-7)
  np.testing.assert_allclose(schedules.keep_ratio(u, "shifted", 1.0), u)
  # Official C2I grid: t_i = linspace(0, 1, S + 1).
  np.testing.assert_allclose(schedules.progress(jnp.arange(51), 50, 50, 5),
                             np.linspace(0, 1, 51), atol=1e-6)
  # Stretched: warm-up 5 of base 50, budget 15 -> u_10 = .1 + .9 * 5 / 10 = .55.
  np.testing.assert_allclose(schedules.progress(jnp.array([5, 10, 15]), 15, 50, 5),
                             [.1, .55, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match="schedule"):
    schedules.keep_ratio(u, "cosinus")


def test_guidance_matches_numpy_reference():
  rng = np.random.default_rng(0)
  cond, uncond = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4))
  t = np.array([0.3, 0.6])
  out = guidance.combine(jnp.asarray(cond), jnp.asarray(uncond), jnp.asarray(t), 2.35, 0.44, 1.0)
  scale = np.where((t < 1.0) & (t > 0.44), 2.35, 1.0)[:, None, None]
  np.testing.assert_allclose(out, uncond + scale * (cond - uncond), rtol=1e-5)
  # power-cos (low < 0): base is the conditional logits.
  out = guidance.combine(jnp.asarray(cond), jnp.asarray(uncond), jnp.asarray(t), 3.0, -2.0, 1.0)
  g = ((1 - np.cos(np.pi * t**2)) / 2)[:, None, None]
  np.testing.assert_allclose(out, cond + 3.0 * g * (cond - uncond), rtol=1e-5)
  active = guidance.interval_active(jnp.array([0.0, 0.3, 0.5, 1.0]), 2.0, 0.44, 1.0)
  np.testing.assert_array_equal(active, [False, False, True, False])
  np.testing.assert_array_equal(guidance.interval_active(jnp.array([.5]), 1.0, 0.0, 1.0), [False])


class ScriptedModel:
  """A fake network: logits favour label (class + position) % K with a per-class sharpness."""

  def __init__(self, shape, classes, sharpness):
    self.shape, self.classes = shape, classes
    self.sharpness = jnp.asarray(sharpness, jnp.float32)
    self.calls = 0

  def __call__(self, params, labels, t, class_labels):
    del params, t
    h, w, d = self.shape
    pos = jnp.arange(h * w * d).reshape(h, w, d)
    target = (class_labels[:, None, None, None] + pos) % self.classes
    onehot = jax.nn.one_hot(target, self.classes)
    sharp = self.sharpness[jnp.minimum(class_labels, len(self.sharpness) - 1)]
    return onehot * sharp[:, None, None, None, None]

  def __hash__(self):
    return id(self)


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


def test_deterministic_given_seed_and_sharded_equals_single_device():
  config = c2i_configs.get_config("variant=tiny")
  config.sample.update(num_steps=4, cfg_scale=2.0, cfg_interval=(0.2, 1.0), temperature=1.0)
  module = api.model_apply(config).module
  x = (jnp.zeros((1, 4, 4, 4), jnp.int32), jnp.zeros(1), jnp.zeros(1, jnp.int32))
  abstract = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *x)["params"])
  rng = np.random.default_rng(0)  # random params without compiling init
  params = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(np.float32), abstract)
  classes = np.arange(8, dtype=np.int32) % 10
  a, _ = api.sample_labels(config, params, classes, jax.random.key(7))
  b, _ = api.sample_labels(config, params, classes, jax.random.key(7))
  c, _ = api.sample_labels(config, params, classes, jax.random.key(8))
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) != np.asarray(c)).any()
  mesh = sharding.make_mesh({"data": -1})
  with jax.set_mesh(mesh):
    sharded = jax.device_put(classes, sharding.batch_sharding(mesh, 1))
    d, _ = api.sample_labels(config, params, sharded, jax.random.key(7))
  np.testing.assert_array_equal(a, d)
  # The loop state stays batch-sharded: every device holds one row.
  assert {shard.data.shape[0] for shard in d.addressable_shards} == {1}


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
