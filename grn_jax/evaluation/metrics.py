"""Generation metrics on Inception outputs: Fréchet distance, Inception Score, precision/recall.

All functions take numpy features (float [N, 2048] pool features, float [N, 1008] logits) and
return Python floats; the Fréchet distance is computed in float64 as pytorch-fid does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """float [N, D] -> (mu float64 [D], sigma float64 [D, D]) (unbiased covariance, N - 1)."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"need features [N >= 2, D], got {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)), in float64.

  As pytorch-fid: when the matrix square root of a (near-)singular product is not finite, eps is
  added to both diagonals; a square root with a non-negligible imaginary diagonal raises.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or mu1.ndim != 1:
    raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}.")
  if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
    raise ValueError(f"covariances must both be [{mu1.size}, {mu1.size}], got {sigma1.shape} and "
                     f"{sigma2.shape}.")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"matrix square root has an imaginary component of "
                       f"{np.max(np.abs(covmean.imag)):.3g}: the covariances are too degenerate "
                       "(too few samples for the feature dimension?).")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """exp(E_x KL(p(y|x) || p(y))) over `splits` contiguous splits -> (mean, std).

  Args:
    logits: float [N, C] classifier logits (the bias-free 1008-way logits of the FID Inception,
      as the original IS code and torch-fidelity; torch-fidelity also shuffles the samples with a
      fixed seed before splitting, ADM's evaluator does not; we do not).
    splits: number of splits (10 by convention).
  """
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[0] < splits:
    raise ValueError(f"need logits [N >= splits={splits}, C], got {logits.shape}.")
  logits = logits - logits.max(axis=1, keepdims=True)
  log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  scores = []
  for part in np.array_split(log_p, splits):
    p = np.exp(part)
    log_marginal = np.log(p.mean(axis=0, keepdims=True))
    kl = np.sum(p * (part - log_marginal), axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


@functools.partial(jax.jit, static_argnames=("k",))
def _kth_neighbour_sq(rows, rows_valid, points, points_valid, k: int):
  """Squared distance from each row to its k-th nearest valid point (itself included)."""
  d = _sq_dists(rows, points)
  d = jnp.where(points_valid[None, :], d, jnp.inf)
  kth = -jax.lax.top_k(-d, k)[0][:, -1]
  return jnp.where(rows_valid, kth, jnp.inf)


@jax.jit
def _inside_any_ball(rows, centres, centres_valid, radii_sq):
  d = _sq_dists(rows, centres)
  inside = (d <= radii_sq[None, :]) & centres_valid[None, :]
  return jnp.any(inside, axis=1)


def _sq_dists(a, b):
  a2 = jnp.sum(a * a, axis=1)[:, None]
  b2 = jnp.sum(b * b, axis=1)[None, :]
  ab = jnp.dot(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(a2 - 2.0 * ab + b2, 0.0)


def _padded(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
  pad = size - len(x)
  valid = np.arange(size) < len(x)
  return np.concatenate([x, np.zeros((pad, x.shape[1]), x.dtype)]), valid


def _manifold_radii(points: np.ndarray, k: int, block: int) -> np.ndarray:
  n = len(points)
  all_points, all_valid = _padded(points, n)
  out = []
  for start in range(0, n, block):
    rows, valid = _padded(points[start:start + block], block)
    # k + 1: a point is its own nearest neighbour at distance 0.
    out.append(np.asarray(_kth_neighbour_sq(rows, valid, all_points, all_valid, k + 1))
               [:min(block, n - start)])
  return np.concatenate(out)


def _coverage(queries: np.ndarray, centres: np.ndarray, radii_sq: np.ndarray,
              block: int) -> float:
  valid_c = np.ones(len(centres), bool)
  hits = 0
  for start in range(0, len(queries), block):
    rows, valid = _padded(queries[start:start + block], block)
    inside = np.asarray(_inside_any_ball(rows, centres, valid_c, radii_sq))
    hits += int(np.sum(inside & valid))
  return hits / len(queries)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     block: int = 1024) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

  precision = fraction of `fake` inside the real manifold (union of balls around each real
  feature with radius = distance to its k-th nearest real neighbour); recall = fraction of
  `real` inside the fake manifold. Distances are computed in float32 blocks of `block` rows.

  Args:
    real: float [N, D] features of reference images.
    fake: float [M, D] features of generated images.
  """
  real = np.asarray(real, np.float32)
  fake = np.asarray(fake, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"features must be [N, D] with equal D, got {real.shape} and {fake.shape}.")
  if min(len(real), len(fake)) <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} samples per set, got "
                     f"{len(real)} and {len(fake)}.")
  real_radii = _manifold_radii(real, k, block)
  fake_radii = _manifold_radii(fake, k, block)
  precision = _coverage(fake, real, real_radii, block)
  recall = _coverage(real, fake, fake_radii, block)
  return precision, recall
