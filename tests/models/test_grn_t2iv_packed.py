"""The packed training forward of the T2I/T2V transformer equals the sampling path (encode_text +
denoise) of each packed example, for every attention impl; padding and other examples never leak
in; bad packed inputs fail naming the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import t2iv as t2iv_configs
from grn_jax.convert import t2iv as t2iv_convert
from grn_jax.data import packing
from grn_jax.models import build_t2iv

from . import t2iv_reference as ref

SPEC = packing.PackingSpec(visual_tokens=72, text_tokens=12, max_samples=3)
# (frames, h, w, h_div_w, text length): an image, a non-square video; the second row one image.
ROWS = (((1, 4, 4, 1.0, 3), (3, 3, 5, 9 / 16, 5)), ((1, 3, 6, 0.5, 7),))


def _cfg(**kw):
  cfg = t2iv_configs.model_config("tiny")  # 4 heads, 2 key/value heads
  cfg.update(kw)
  return cfg


def _examples(cfg, seed=0):
  rng = np.random.default_rng(seed)
  dim = cfg.hbq_rounds * cfg.latent_dim
  return [[dict(labels=rng.integers(0, 2, (t, h, w, dim)).astype(np.uint8),
                features=rng.standard_normal((n, cfg.text_dim)).astype(np.float32),
                h_div_w=r) for t, h, w, r, n in row] for row in ROWS]


def _batch(rows, scales):
  packed = [packing.pack_row(r, SPEC) for r in rows]
  batch = {k: np.stack([p[k] for p in packed]) for k in packed[0]}
  batch["scale"] = np.zeros((len(rows), SPEC.max_samples), np.float32)
  for b, row_scales in enumerate(scales):
    batch["scale"][b, :len(row_scales)] = row_scales
  return batch


def _packed_logits(model, params, batch):
  fn = jax.jit(lambda p, b: model.apply(
      {"params": p}, b["labels"], b["scale"], b["features"], b["visual_ids"], b["text_ids"],
      b["positions"], method="packed"))
  return np.asarray(fn(params, batch))


def _unpacked_logits(model, params, example, scale):
  text = model.apply({"params": params}, example["features"][None],
                     np.ones((1, len(example["features"])), bool), method="encode_text")
  return np.asarray(model.apply({"params": params}, example["labels"][None].astype(np.int32),
                                np.array([scale], np.float32), text,
                                h_div_w=example["h_div_w"], method="denoise"))[0]


@pytest.fixture(scope="module")
def params():
  cfg = _cfg()
  sd = ref.random_state_dict(ref.official_shapes(
      cfg.hidden_size, cfg.depth, cfg.num_heads, cfg.num_kv_heads, cfg.mlp_ratio,
      cfg.block_chunks, cfg.hbq_rounds * cfg.latent_dim, cfg.text_dim), seed=4)
  return sd


@pytest.mark.parametrize("impl,scan", [("xla", False), ("chunked", True), ("splash", False)])
def test_packed_row_equals_each_example_alone(params, impl, scan):
  cfg = _cfg(attention_impl=impl, scan_layers=scan, remat_policy="full" if scan else "none")
  weights = t2iv_convert.t2iv_params_from_torch(params, cfg)
  model = build_t2iv(cfg)
  rows = _examples(cfg)
  scales = [(0.3, 0.8), (0.55,)]
  batch = _batch(rows, scales)
  logits = _packed_logits(model, weights, batch)
  assert logits.shape == (2, SPEC.visual_tokens, cfg.hbq_rounds * cfg.latent_dim, 2)
  worst = 0.0
  for b, row in enumerate(rows):
    start = 0
    for example, scale in zip(row, scales[b]):
      tokens = int(np.prod(example["labels"].shape[:3]))
      want = _unpacked_logits(model, weights, example, scale)
      got = logits[b, start:start + tokens].reshape(want.shape)
      assert np.abs(want).max() > 0.1
      worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
      start += tokens + 1
  # float32 rounding only (the packed keys are summed in another order).
  assert worst < 2e-5, worst
  print(f"{impl}: max |packed - unpacked| / max |logit| = {worst:.2e}")


def test_padding_and_other_examples_never_leak_in(params):
  cfg = _cfg()
  weights = t2iv_convert.t2iv_params_from_torch(params, cfg)
  model = build_t2iv(cfg)
  rows = _examples(cfg)
  batch = _batch(rows, [(0.3, 0.8), (0.55,)])
  base = _packed_logits(model, weights, batch)
  other = {k: v.copy() for k, v in batch.items()}
  first = batch["visual_ids"][0] == 1
  other["labels"][0, ~first] = 1 - other["labels"][0, ~first]      # example 2 and padding
  other["features"][0, batch["text_ids"][0] != 1] += 3.0            # its text and padding
  other["scale"][0, 1:] = 0.1
  other["labels"][1] = 1 - other["labels"][1]                       # the other row
  changed = _packed_logits(model, weights, other)
  np.testing.assert_allclose(changed[0, first], base[0, first], atol=1e-6)
  assert np.abs(changed[0, batch["visual_ids"][0] == 2] -
                base[0, batch["visual_ids"][0] == 2]).max() > 1e-3


def test_bad_packed_inputs_name_the_field(params):
  cfg = _cfg()
  weights = t2iv_convert.t2iv_params_from_torch(params, cfg)
  model = build_t2iv(cfg)
  batch = _batch(_examples(cfg), [(0.3, 0.8), (0.55,)])
  args = [batch[k] for k in ("labels", "scale", "features", "visual_ids", "text_ids",
                             "positions")]
  bad = list(args)
  bad[5] = args[5][:, :-1]
  with pytest.raises(ValueError, match=r"positions must be int \(2, 84, 3\)"):
    model.apply({"params": weights}, *bad, method="packed")
  bad = list(args)
  bad[2] = args[2][..., :-1]
  with pytest.raises(ValueError, match="text_dim"):
    model.apply({"params": weights}, *bad, method="packed")
  bad = list(args)
  bad[0] = args[0][..., :-1]
  with pytest.raises(ValueError, match="hbq_rounds|visual_tokens"):
    model.apply({"params": weights}, *bad, method="packed")
  assert jnp.asarray(args[0]).dtype == jnp.uint8
