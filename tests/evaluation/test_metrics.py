"""Fréchet distance, Inception Score, precision/recall."""

import numpy as np
import pytest
from scipy import linalg

from grn_jax.evaluation import metrics


def _reference_fd(mu1, s1, mu2, s2):
  """Textbook formula via eigen-decomposition: Tr((s1^1/2 s2 s1^1/2)^1/2)."""
  w, v = np.linalg.eigh(s1)
  root1 = (v * np.sqrt(np.maximum(w, 0))) @ v.T
  inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.maximum(inner, 0))))


def _features(n, d, seed, shift=0.0, scale=1.0):
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return rng.normal(size=(n, d)) @ mix * scale + shift


def _feature_distance(a, b):
  """The Fréchet distance of two feature sets [N, D] (as the demo evaluation uses it)."""
  return metrics.frechet_distance(*metrics.feature_statistics(a), *metrics.feature_statistics(b))


def test_frechet_distance_values():
  a = _features(500, 16, 0)
  b = _features(400, 16, 1, shift=0.5, scale=1.3)
  mu_a, s_a = metrics.feature_statistics(a)
  mu_b, s_b = metrics.feature_statistics(b)
  np.testing.assert_allclose(mu_a, a.mean(0))
  np.testing.assert_allclose(s_a, np.cov(a.T))
  assert abs(metrics.frechet_distance(mu_a, s_a, mu_a, s_a)) < 1e-8
  fd = metrics.frechet_distance(mu_a, s_a, mu_b, s_b)
  assert fd == pytest.approx(_reference_fd(mu_a, s_a, mu_b, s_b), rel=1e-7)
  assert fd == pytest.approx(metrics.frechet_distance(mu_b, s_b, mu_a, s_a), rel=1e-7)
  # Larger shift -> larger distance; a pure mean shift adds exactly ||delta||^2.
  fd2 = metrics.frechet_distance(mu_a, s_a, mu_b + 1.0, s_b)
  assert fd2 > fd
  assert metrics.frechet_distance(mu_a, s_a, mu_a + 2.0, s_a) == pytest.approx(4.0 * 16, rel=1e-6)
  # Closed form for commuting (diagonal) covariances.
  s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 1.0])
  expected = 1 + 4 + 9 + 4 + 1 + 1 - 2 * (2 + 2 + 3)
  assert metrics.frechet_distance(np.zeros(3), s1, np.zeros(3), s2) == pytest.approx(expected)


def test_frechet_distance_singular_and_errors():
  # Rank-deficient covariances (fewer samples than dimensions) still give a finite value.
  a, b = _features(10, 32, 2), _features(10, 32, 3, shift=0.2)
  fd = metrics.frechet_distance(*metrics.feature_statistics(a), *metrics.feature_statistics(b))
  assert np.isfinite(fd) and fd > 0
  with pytest.raises(ValueError, match="differ in shape"):
    metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  with pytest.raises(ValueError, match="N >= 2"):
    metrics.feature_statistics(np.zeros((1, 4)))


def test_frechet_distance_known_values():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((4000, 3))
  assert _feature_distance(a, a) == pytest.approx(0.0, abs=1e-3)
  # Same covariance, mean shifted by (1, 2, 2): distance = |shift|^2 = 9.
  assert _feature_distance(a, a + [1.0, 2.0, 2.0]) == pytest.approx(9.0, rel=1e-3)
  # N(0, I) vs N(0, 4 I) in 3-d: 3 * (1 + 4 - 2 * 2) = 3.
  b = rng.standard_normal((200_000, 3)) * 2.0
  c = rng.standard_normal((200_000, 3))
  assert _feature_distance(c, b) == pytest.approx(3.0, rel=0.03)


def test_inception_score_known_values():
  # Confident, uniformly spread predictions over C classes -> IS = C; identical ones -> 1.
  c = 10
  logits = np.full((100, c), -50.0)
  logits[np.arange(100), np.arange(100) % c] = 50.0
  mean, std = metrics.inception_score(logits, splits=10)
  assert mean == pytest.approx(c, rel=1e-6) and std < 1e-6
  mean, _ = metrics.inception_score(np.tile(logits[:1], (100, 1)), splits=10)
  assert mean == pytest.approx(1.0, abs=1e-6)
  # Uniform predictions -> 1 regardless of class count.
  assert metrics.inception_score(np.zeros((50, 7)), splits=5)[0] == pytest.approx(1.0)
  # Against a direct numpy computation on random logits.
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(60, 8)) * 3
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  scores = []
  for part in np.split(p, 3):
    py = part.mean(0)
    scores.append(np.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
  assert metrics.inception_score(logits, splits=3)[0] == pytest.approx(np.mean(scores))


def test_precision_recall():
  real = _features(300, 8, 0)
  p, r = metrics.precision_recall(real, real.copy(), block=64)
  assert p == 1.0 and r == 1.0
  # Fake set = half the real set: all fakes inside the real manifold (precision 1), but the real
  # points not covered by the smaller fake manifold lower the recall.
  p, r = metrics.precision_recall(real, real[:150], block=64)
  assert p == 1.0 and r < 1.0
  far = real + 100.0
  assert metrics.precision_recall(real, far, block=64) == (0.0, 0.0)
  # Brute-force reference.
  fake = _features(200, 8, 1, shift=0.7)
  d_rr = linalg.norm(real[:, None] - real[None], axis=-1)
  d_ff = linalg.norm(fake[:, None] - fake[None], axis=-1)
  d_fr = linalg.norm(fake[:, None] - real[None], axis=-1)
  r_real = np.sort(d_rr, axis=1)[:, 3]
  r_fake = np.sort(d_ff, axis=1)[:, 3]
  want_p = np.mean(np.any(d_fr <= r_real[None], axis=1))
  want_r = np.mean(np.any(d_fr.T <= r_fake[None], axis=1))
  got_p, got_r = metrics.precision_recall(real, fake, k=3, block=64)
  assert got_p == pytest.approx(want_p, abs=1 / 200) and got_r == pytest.approx(want_r, abs=1 / 300)
  assert 0 < got_p < 1 and 0 < got_r < 1
