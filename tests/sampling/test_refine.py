"""The family-free refinement loop: keep semantics, adaptive budgets, guidance skipping, compiles,
labels of any rank, fixed labels, realised keep ratios, replays, stop rules, conditioning."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax.sampling import refine
from grn_jax.sampling import schedules
from grn_jax.sampling.spec import Replay, SamplerSettings, SamplerSpec
from tests.sampling.scripted_model import MixingModel, ScriptedModel, mixing_logits

NULL = 5  # the unconditional "class" of the scripted model's tests


def _spec(**kw):
  base = dict(label_shape=(3, 3, 2), label_values=4, hbq_rounds=2, label_mode="ind",
              num_steps=6)
  base.update(kw)
  return SamplerSpec(**base)


def _sample(sampler, cond, key, settings, **kw):
  """One call with the scripted model's conditioning: cond int [B], uncond NULL."""
  cond = jnp.asarray(cond)
  return sampler(None, cond, jnp.full_like(cond, NULL), refine.row_keys(key, cond.shape[0]),
                 settings, **kw)


def test_keep_semantics_and_last_step_returns_prediction():
  model = ScriptedModel((3, 3, 2), 4, [50.0] * 6)  # near-deterministic predictions
  spec = _spec(trace=True)
  out = _sample(jax.jit(refine.make_sampler(model, spec)), [0, 1, 2], jax.random.key(0),
                SamplerSettings())
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


def test_video_rank_labels_keep_the_same_semantics():
  # Labels [B, T, h, w, D]: the loop broadcasts per-row values over any grid.
  shape = (2, 2, 3, 2)
  model = ScriptedModel(shape, 4, [50.0] * 6)
  out = _sample(jax.jit(refine.make_sampler(model, _spec(label_shape=shape, trace=True))),
                [0, 3], jax.random.key(1), SamplerSettings(cfg_scale=2.0))
  target = np.asarray(model.target(jnp.array([0, 3])))
  assert out.labels.shape == (2,) + shape
  np.testing.assert_array_equal(out.labels, target)
  labels, keep = np.asarray(out.trace["labels"]), np.asarray(out.trace["keep"])
  rand = np.asarray(out.trace["random_labels"])
  for i in range(6):
    np.testing.assert_array_equal(labels[i + 1], np.where(keep[i], target, rand))
  assert keep[-1].all() and 0 < keep[2].mean() < 1


def test_last_step_keeps_the_tempered_sample_statistics():
  # One step: t = 0 input, t_next = 1 -> the output is a plain sample of softmax(logits / tau).
  model = ScriptedModel((8, 8, 4), 4, [1.5] * 10)
  sampler = jax.jit(refine.make_sampler(model, _spec(label_shape=(8, 8, 4), num_steps=1)))
  y = jnp.zeros((64,), jnp.int32)
  for tau in (0.5, 2.0):
    out = _sample(sampler, y, jax.random.key(1), SamplerSettings(temperature=tau))
    target = np.arange(256).reshape(8, 8, 4) % 4
    hit = float((np.asarray(out.labels) == target).mean())
    p = np.exp(1.5 / tau) / (np.exp(1.5 / tau) + 3)
    assert abs(hit - p) < 0.01, (tau, hit, p)


def test_confidence_keeping_keeps_the_most_confident():
  logp = jnp.log(jnp.array([[0.9, 0.2, 0.5, 0.7]]))
  keep = refine._confident_keep(logp, jnp.array([0.5]))  # pylint: disable=protected-access
  np.testing.assert_array_equal(keep, [[True, False, False, True]])
  model = ScriptedModel((3, 3, 2), 4, [2.0] * 6)
  out = _sample(jax.jit(refine.make_sampler(model, _spec(keep_mode="confidence", trace=True))),
                [0, 1], jax.random.key(0), SamplerSettings())
  kept = np.asarray(out.trace["keep"]).reshape(6, 2, -1).sum(-1)
  np.testing.assert_array_equal(kept[:, 0], np.round(np.arange(1, 7) / 6 * 18))


def test_changing_traced_settings_never_recompiles():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 6)
  sampler = jax.jit(refine.make_sampler(model, _spec()))
  y, key = jnp.array([0, 1]), jax.random.key(0)
  _sample(sampler, y, key, SamplerSettings(cfg_scale=2.0, temperature=1.0))
  before = sampler._cache_size()  # pylint: disable=protected-access
  for scale, low, temp in [(3.0, 0.4, 0.7), (1.0, 0.0, 1.3), (2.5, -1.0, 2.0)]:
    _sample(sampler, y, key, SamplerSettings(cfg_scale=scale, cfg_low=low, temperature=temp,
                                             entropy_k=3.0, schedule_shift=2.0))
  assert sampler._cache_size() == before == 1  # pylint: disable=protected-access
  # A host keep-ratio table is traced too: new values, no new program.
  table = _spec().schedule.host_table(6, 1.0)
  _sample(sampler, y, key, SamplerSettings(keep_table=table))
  after = sampler._cache_size()  # pylint: disable=protected-access
  _sample(sampler, y, key, SamplerSettings(keep_table=table * 0.5, cfg_scale=3.0))
  assert sampler._cache_size() == after == 2  # pylint: disable=protected-access


def test_unconditional_pass_skipped_outside_the_interval():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 6)
  sampler = jax.jit(refine.make_sampler(model, _spec(num_steps=10)))
  y, key = jnp.array([0, 1]), jax.random.key(0)
  # interval (0.44, 1): t in {0, .1, ..., .9} -> guided at .5 .. .9 = 5 steps of 10.
  out = _sample(sampler, y, key, SamplerSettings(cfg_scale=2.0, cfg_low=0.44, cfg_high=1.0))
  assert int(out.nfe) == 2 * (5 * 1 + 5 * 2)
  np.testing.assert_array_equal(out.row_nfe, [15, 15])
  out = _sample(sampler, y, key, SamplerSettings(cfg_scale=1.0))
  assert int(out.nfe) == 2 * 10
  # Threshold rule (official T2I/T2V): guided while t >= 0.3 -> t = .3 .. .9, 7 of 10 steps.
  sampler = jax.jit(refine.make_sampler(model, _spec(num_steps=10, guidance="threshold")))
  out = _sample(sampler, y, key, SamplerSettings(cfg_scale=2.0, cfg_low=0.3))
  np.testing.assert_array_equal(out.row_nfe, [17, 17])


def test_adaptive_budgets_follow_entropy_and_freeze_finished_rows():
  # Class 0: confident (low entropy) -> few steps; class 1: flat logits -> many steps.
  model = ScriptedModel((3, 3, 2), 4, [8.0, 0.0])
  spec = _spec(num_steps=10, adaptive=True, warmup_steps=2, min_steps=4, max_steps=16,
               trace=True)
  settings = SamplerSettings(entropy_k=20.0, entropy_b=-5.0)
  out = _sample(jax.jit(refine.make_sampler(model, spec)), [0, 1], jax.random.key(3), settings)
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
  out = _sample(jax.jit(refine.make_sampler(model, total_spec)), [0, 1], jax.random.key(3),
                settings)
  np.testing.assert_array_equal(out.steps, [4, 15])


def test_budget_from_entropy_official_constants():
  spec = _spec(num_steps=50, adaptive=True, warmup_steps=5, min_steps=10, max_steps=50)
  settings = SamplerSettings().as_arrays()
  h = jnp.array([0.70, 0.774, 0.80, 0.845, 0.95])
  # GRN-SPEC F.4 examples: H=0.80 -> remainder 16 -> 21 steps; 0.845 -> 35 -> 40; low -> 10.
  np.testing.assert_array_equal(refine.budget_from_entropy(h, spec, settings),
                                [10, 10, 21, 40, 50])


def test_per_row_keys_make_rows_independent_of_their_batch():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 10)
  sampler = jax.jit(refine.make_sampler(model, _spec(num_steps=3)))
  classes = jnp.arange(8) % 10
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(8))
  full = _sample(sampler, classes, keys, SamplerSettings(cfg_scale=2.0)).labels
  part = _sample(sampler, classes[2:6], keys[2:6], SamplerSettings(cfg_scale=2.0)).labels
  np.testing.assert_array_equal(np.asarray(full)[2:6], part)
  with pytest.raises(ValueError, match="one per row"):
    _sample(sampler, classes, keys[:3], SamplerSettings())
  with pytest.raises(TypeError, match="typed PRNG keys"):
    _sample(sampler, classes, jax.random.PRNGKey(0), SamplerSettings())
  with pytest.raises(TypeError, match="one per row"):  # the loop itself takes keys [B]
    sampler(None, classes, classes, jax.random.key(0), SamplerSettings())


def test_fixed_labels_hold_in_every_step_and_free_labels_refine():
  model = ScriptedModel((3, 3, 2), 4, [50.0] * 6)
  spec = _spec(trace=True)
  sampler = jax.jit(refine.make_sampler(model, spec))
  rng = np.random.default_rng(0)
  fixed = rng.integers(0, 4, (3, 3, 3, 2)).astype(np.int32)
  mask = np.zeros((3, 3, 3, 2), bool)
  mask[0, :, :1] = True           # row 0: the left column fixed (outpainting-like)
  mask[1, 1:, 1:] = True          # row 1: a corner fixed (inpainting-like)
  mask[2] = True                  # row 2: everything fixed
  out = _sample(sampler, [0, 1, 2], jax.random.key(0), SamplerSettings(cfg_scale=2.0),
                fixed_labels=jnp.asarray(fixed), fixed_mask=jnp.asarray(mask))
  target = np.asarray(model.target(jnp.array([0, 1, 2])))
  labels, pred = np.asarray(out.trace["labels"]), np.asarray(out.trace["pred"])
  for step_labels in list(labels) + list(pred) + [np.asarray(out.labels)]:
    np.testing.assert_array_equal(step_labels[mask], fixed[mask])
  np.testing.assert_array_equal(np.asarray(out.labels)[~mask], target[~mask])  # free: refined
  np.testing.assert_array_equal(out.labels[2], fixed[2])  # all fixed: returns its input
  np.testing.assert_array_equal(labels[:, 2], np.broadcast_to(fixed[2], labels[:, 2].shape))
  assert np.asarray(out.trace["keep"])[:, mask].all()  # fixed labels count as kept
  # The free labels still start random: some differ from their target at the first input.
  assert (labels[0][~mask] != target[~mask]).any()
  with pytest.raises(ValueError, match="pass both"):
    _sample(sampler, [0, 1, 2], jax.random.key(0), SamplerSettings(),
            fixed_labels=jnp.asarray(fixed))
  with pytest.raises(ValueError, match="labels' shape"):
    _sample(sampler, [0, 1, 2], jax.random.key(0), SamplerSettings(),
            fixed_labels=jnp.asarray(fixed[:, :2]), fixed_mask=jnp.asarray(mask[:, :2]))
  with pytest.raises(TypeError, match="bool"):
    _sample(sampler, [0, 1, 2], jax.random.key(0), SamplerSettings(),
            fixed_labels=jnp.asarray(fixed), fixed_mask=jnp.asarray(mask, jnp.int32))


def test_fixed_labels_leave_the_entropy_to_the_free_labels():
  # Row 1 (flat logits, H = 1 everywhere) with every label but one fixed still measures H = 1;
  # the entropy of a fully fixed row is 0 (no free label).
  logits = jnp.stack([jnp.zeros((3, 3, 2, 4)), jnp.zeros((3, 3, 2, 4))])
  logits = logits.at[0, 0, 0, 0].set(jnp.array([30.0, 0, 0, 0]))
  free = np.zeros((2, 3, 3, 2), bool)
  free[0, 0, 0, 0] = True
  np.testing.assert_allclose(refine.normalized_entropy(logits, jnp.asarray(free)), [0.0, 0.0],
                             atol=1e-6)
  free[1] = True
  np.testing.assert_allclose(refine.normalized_entropy(logits, jnp.asarray(free)), [0.0, 1.0],
                             atol=1e-6)


def test_realised_keep_ratio_is_fed_to_the_model():
  model = ScriptedModel((3, 3, 2), 4, [2.0] * 6)
  spec = _spec(model_keep_ratio="realised", trace=True)
  out = _sample(jax.jit(refine.make_sampler(model, spec)), [0, 1], jax.random.key(4),
                SamplerSettings())
  keep, fed = np.asarray(out.trace["keep"]), np.asarray(out.trace["keep_ratio"])
  np.testing.assert_array_equal(fed[0], 0.0)
  realised = (keep.reshape(6, 2, -1).sum(-1).astype(np.float32) / np.float32(18))
  np.testing.assert_array_equal(fed[1:], realised[:-1])  # exact float32 count / n
  nominal = np.float32(np.arange(1, 4) * 3) / np.float32(18)  # i / 6 on the same float32 grid
  assert (fed[1:4] != nominal[:, None]).any()  # not the nominal schedule


def official_t2iv_reference(init, samples, uniforms, cond, uncond, values, w, x, tau, shift,
                            tmax, steps):
  """numpy transcription of the official T2I/T2V HEAD loop (GRN-SPEC §F.2, §L), one row,
  driven by recorded draws: (inputs, scale values, probs, final labels)."""
  rand, z, cur = init, init, np.float32(0.0)
  inputs, scales, probs = [], [], []
  pred = None
  for i in range(steps):
    inputs.append(z)
    scales.append(cur)
    lc = mixing_logits(np, z[None], cur, np.float32(cond), values)[0]
    lu = mixing_logits(np, z[None], cur, np.float32(uncond), values)[0]
    cfg = w if cur >= x else 1.0
    l = lc if cfg == 1 else lu + np.float32(cfg) * (lc - lu)
    l = l / np.float32(tau)
    p = np.exp(l - l.max(-1, keepdims=True))
    probs.append(p / p.sum(-1, keepdims=True))
    pred = samples[i]
    u = min(1.0, (i + 1) / (tmax - 1))
    noise = 1.0 - u
    u_shift = 1.0 - shift * noise / (1.0 + (shift - 1.0) * noise)
    nxt = (1.0 - np.cos(np.pi / 2 * u_shift)) * 0.999
    keep = uniforms[i] < np.float32(nxt)
    z = np.where(keep, pred, rand)
    if abs(cur - 1) < 1e-6:
      break
    cur = np.float32(keep.sum()) / np.float32(keep.size)
  return inputs, scales, probs, pred


def test_replay_equals_a_numpy_transcription_of_the_official_t2iv_loop():
  # Video-shaped bit labels [B, T, h, w, D]; realised keep ratio; threshold guidance; the
  # official cosine schedule (Tmax = 4) from a host table; the official stop rule.
  shape, values, steps, tmax = (2, 2, 3, 4), 2, 5, 4
  spec = SamplerSpec(label_shape=shape, label_values=values, hbq_rounds=1, label_mode="bit",
                     num_steps=steps, schedule=schedules.official_t2iv(tmax),
                     model_keep_ratio="realised", guidance="threshold",
                     stop_rule=refine.stop_when_input_complete, trace=True, trace_probs=True)
  rng = np.random.default_rng(0)
  batch = 2
  replay = Replay(init_labels=rng.integers(0, 2, (batch,) + shape).astype(np.int32),
                  samples=rng.integers(0, 2, (steps, batch) + shape).astype(np.int32),
                  uniforms=rng.random((steps, batch) + shape).astype(np.float32))
  replay.uniforms[2, 0] = 0.0  # row 0 keeps everything at step 2 -> stops after step 3
  replay.uniforms[2:, 1, 0, 0, 0, 0] = 0.9995  # row 1 never keeps all (t_next <= 0.999)
  w, x, tau, shift = 3.0, 0.3, 1.1, 2.0
  settings = SamplerSettings(cfg_scale=w, cfg_low=x, temperature=tau, schedule_shift=shift,
                             keep_table=spec.schedule.host_table(steps, shift))
  cond, uncond = np.array([0.5, -0.3], np.float32), np.zeros(batch, np.float32)
  out = jax.jit(refine.make_sampler(MixingModel(values), spec))(
      None, cond, uncond, jax.random.split(jax.random.key(0), batch), settings,
      replay=jax.tree.map(jnp.asarray, replay))
  trace = jax.device_get(out.trace)
  np.testing.assert_array_equal(out.steps, [4, steps])
  for row in range(batch):
    inputs, scales, probs, final = official_t2iv_reference(
        replay.init_labels[row], replay.samples[:, row], replay.uniforms[:, row], cond[row],
        uncond[row], values, w, x, tau, shift, tmax, steps)
    used = len(inputs)
    assert used == int(out.steps[row])
    np.testing.assert_array_equal(trace["labels"][:used, row], np.stack(inputs))
    np.testing.assert_array_equal(trace["keep_ratio"][:used, row], np.stack(scales))
    np.testing.assert_allclose(trace["probs"][:used, row], np.stack(probs), atol=1e-6)
    np.testing.assert_array_equal(out.labels[row], final)
  # Without the table the in-graph float32 schedule gives the same trajectory here.
  no_table = jax.jit(refine.make_sampler(MixingModel(values), spec))(
      None, cond, uncond, jax.random.split(jax.random.key(0), batch),
      settings.replace(keep_table=None), replay=jax.tree.map(jnp.asarray, replay))
  np.testing.assert_array_equal(no_table.labels, out.labels)
  with pytest.raises(ValueError, match="keep_mode='random'"):
    jax.jit(refine.make_sampler(MixingModel(values), dataclasses.replace(
        spec, keep_mode="confidence")))(None, cond, uncond, jax.random.split(
            jax.random.key(0), batch), settings, replay=jax.tree.map(jnp.asarray, replay))
  short = Replay(replay.init_labels, replay.samples[:2], replay.uniforms[:2])
  with pytest.raises(ValueError, match="replay"):
    jax.jit(refine.make_sampler(MixingModel(values), spec))(
        None, cond, uncond, jax.random.split(jax.random.key(0), batch), settings,
        replay=jax.tree.map(jnp.asarray, short))


def test_custom_concatenation_for_conditioning_with_batch_axis_one():
  # The same per-row conditioning given [B] (default concatenation) and [1, B] with the
  # adapter's own concatenation on axis 1 (like text K/V [L, B, ...]) samples the same labels.
  class AxisOneModel(MixingModel):

    def __call__(self, params, labels, t, cond):
      return super().__call__(params, labels, t, cond[0])

  def concat_axis1(cond, uncond):
    return jnp.concatenate([cond, uncond], axis=1)

  base = _spec(label_values=4, num_steps=4)
  keys = jax.random.split(jax.random.key(5), 3)
  cond, uncond = jnp.array([0.7, -0.2, 0.1]), jnp.zeros(3)
  settings = SamplerSettings(cfg_scale=2.5)
  want = jax.jit(refine.make_sampler(MixingModel(4), base))(None, cond, uncond, keys, settings)
  got = jax.jit(refine.make_sampler(AxisOneModel(4), dataclasses.replace(
      base, concat_conditions=concat_axis1)))(None, cond[None], uncond[None], keys, settings)
  np.testing.assert_array_equal(got.labels, want.labels)
  np.testing.assert_array_equal(got.row_nfe, want.row_nfe)
  assert int(want.nfe) > 4 * 3  # guidance ran (doubled passes)


def test_keep_table_checks():
  model = ScriptedModel((3, 3, 2), 4, [1.0] * 6)
  with pytest.raises(ValueError, match=r"keep_table must be float32 \[6\]"):
    _sample(jax.jit(refine.make_sampler(model, _spec())), [0], jax.random.key(0),
            SamplerSettings(keep_table=np.zeros(5, np.float32)))
  adaptive = _spec(num_steps=10, adaptive=True, warmup_steps=2, min_steps=4, max_steps=10)
  with pytest.raises(ValueError, match="adaptive"):
    _sample(jax.jit(refine.make_sampler(model, adaptive)), [0], jax.random.key(0),
            SamplerSettings(keep_table=np.zeros(10, np.float32)))


def test_sequential_and_doubled_guidance_batching_sample_the_same():
  # Two batch-B passes through one model body (CPU default) and one doubled-batch pass give the
  # same logits, hence the same labels and pass counts; uncond passes are skipped in both.
  base = _spec(label_values=4, num_steps=5)
  keys = jax.random.split(jax.random.key(7), 3)
  cond, uncond = jnp.array([0.7, -0.2, 0.1]), jnp.zeros(3)
  settings = SamplerSettings(cfg_scale=3.0, cfg_low=0.3, cfg_high=0.7)
  outs = [jax.jit(refine.make_sampler(MixingModel(4), dataclasses.replace(
      base, guidance_batching=batching)))(None, cond, uncond, keys, settings)
          for batching in ("doubled", "sequential", "auto")]
  for out in outs[1:]:
    np.testing.assert_array_equal(out.labels, outs[0].labels)
    np.testing.assert_array_equal(out.row_nfe, outs[0].row_nfe)
    assert int(out.nfe) == int(outs[0].nfe)
  assert 5 * 3 < int(outs[0].nfe) < 2 * 5 * 3  # some steps guided, some not
  with pytest.raises(ValueError, match="guidance_batching"):
    _spec(guidance_batching="twice")
