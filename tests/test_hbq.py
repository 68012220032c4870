"""HBQ: closed form, error bound, ties, label modes, layouts, round trips."""

import jax.numpy as jnp
import numpy as np
import pytest

from grn_jax import hbq


@pytest.mark.parametrize("rounds", [1, 2, 3, 4, 8])
def test_matches_closed_form_and_error_bound(rounds):
  rng = np.random.default_rng(rounds)
  f = np.concatenate([rng.uniform(-1, 1, 20000), [-1.0, 1.0, 0.0]]).astype(np.float32)
  labels = np.asarray(hbq.quantize(f[:, None], rounds, "ind"))[:, 0]
  np.testing.assert_array_equal(labels, hbq.quantize_closed_form(f, rounds))
  recon = np.asarray(hbq.dequantize(labels[:, None], rounds, "ind"))[:, 0]
  assert np.abs(recon - f).max() <= 2.0**-rounds + 1e-7
  # bin centres: -1 + (2l + 1) 2^-M
  np.testing.assert_allclose(recon, -1 + (2 * labels + 1) * 2.0**-rounds, atol=1e-7)


def test_ties_go_to_the_lower_bin():
  rounds = 4
  edges = -1 + np.arange(1, 16) * 2.0 ** (1 - rounds)  # interior bin edges, exactly representable
  labels = np.asarray(hbq.quantize(edges[:, None].astype(np.float32), rounds))[:, 0]
  np.testing.assert_array_equal(labels, np.arange(15))
  assert int(hbq.quantize(jnp.zeros((1, 1)), rounds)[0, 0]) == 7  # 0.0 is the top of bin 7


def test_known_values():
  # f = 0.3, M = 4: bits 1,0,1,0 (0 -> .5 -> .25 -> .375 -> .3125) -> index 10, centre 0.3125.
  f = jnp.array([[0.3]])
  np.testing.assert_array_equal(np.asarray(hbq.quantize(f, 4, "bit"))[0], [1, 0, 1, 0])
  assert int(hbq.quantize(f, 4, "ind")[0, 0]) == 10
  np.testing.assert_allclose(np.asarray(hbq.dequantize(jnp.array([[10]]), 4)), [[0.3125]])


def test_bit_mode_is_round_major_and_consistent_with_ind():
  rng = np.random.default_rng(0)
  rounds, d = 3, 5
  f = rng.uniform(-1, 1, (2, 4, d)).astype(np.float32)
  ind = np.asarray(hbq.quantize(f, rounds, "ind"))
  bit = np.asarray(hbq.quantize(f, rounds, "bit"))
  assert bit.shape == (2, 4, rounds * d) and ind.dtype == np.int32 and bit.dtype == np.int32
  for r in range(rounds):
    for c in range(d):
      np.testing.assert_array_equal(bit[..., r * d + c], (ind[..., c] >> (rounds - 1 - r)) & 1)
  np.testing.assert_array_equal(hbq.dequantize(ind, rounds, "ind"),
                                hbq.dequantize(bit, rounds, "bit"))
  np.testing.assert_array_equal(hbq.bits_to_index(hbq.index_to_bits(ind, rounds)), ind)


@pytest.mark.parametrize("mode", ["ind", "bit"])
def test_round_trip_labels(mode):
  rounds, d = 4, 3
  k = hbq.num_classes(rounds, mode)
  labels = np.random.default_rng(1).integers(0, k, (6, hbq.num_labels(d, rounds, mode)))
  again = hbq.quantize(hbq.dequantize(jnp.asarray(labels, jnp.int32), rounds, mode), rounds, mode)
  np.testing.assert_array_equal(again, labels)


def test_int_dtypes_accepted_and_floats_rejected():
  for dtype in (np.int8, np.uint8, np.int16, np.int32):
    out = hbq.dequantize(np.array([[15]], dtype), 4)
    np.testing.assert_allclose(np.asarray(out), [[1 - 1 / 16]])
  with pytest.raises(TypeError, match="integers"):
    hbq.dequantize(np.array([[1.0]]), 4)
  with pytest.raises(ValueError, match="label_mode"):
    hbq.quantize(jnp.zeros((1, 1)), 4, "index")
  with pytest.raises(ValueError, match="divisible"):
    hbq.dequantize(np.zeros((1, 5), np.int32), 4, "bit")


def test_onehot_layouts():
  labels = np.array([[2, 0, 1]])  # D = 3, K = 4
  cm = np.asarray(hbq.onehot_class_major(labels, 4))[0]
  lm = np.asarray(hbq.onehot_label_major(labels, 4))[0]
  for j, k in enumerate(labels[0]):
    assert cm[k * 3 + j] == 1 and lm[j * 4 + k] == 1
  assert cm.sum() == 3 and lm.sum() == 3
