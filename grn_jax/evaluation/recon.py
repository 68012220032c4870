"""Tokenizer reconstruction metrics: PSNR, SSIM, and rFID, at full precision and after HBQ.

Each row of the table decodes a different latent: the encoder's float latent ("full"), or the
latent quantized and dequantized with M = 1..8 HBQ rounds (grn_jax.hbq), the discrete tokens the
GRN generator predicts. PSNR and SSIM are computed per image on the uint8 reconstruction and
averaged; rFID compares Inception features of reconstructions and originals.
"""

import dataclasses
from typing import Iterable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from grn_jax import hbq
from grn_jax import tokenizer_io

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(a: jax.Array, b: jax.Array, data_range: float = 255.0) -> jax.Array:
  """Per-image PSNR in dB. a, b: [B, H, W, C] on a 0..data_range scale -> float32 [B] (inf if equal)."""
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  mse = jnp.mean((a - b) ** 2, axis=(1, 2, 3))
  return 10.0 * jnp.log10(data_range**2 / mse)


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> jnp.ndarray:
  x = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
  g = jnp.exp(-(x**2) / (2 * sigma**2))
  return g / jnp.sum(g)


def _filter_valid(x: jax.Array, g: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filter of [B, H, W, C], channel by channel."""
  c = x.shape[-1]
  k = g.shape[0]
  kh = jnp.tile(g.reshape(k, 1, 1, 1), (1, 1, 1, c))
  kw = jnp.tile(g.reshape(1, k, 1, 1), (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  hp = jax.lax.Precision.HIGHEST
  x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c, precision=hp)
  return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c, precision=hp)


def ssim(a: jax.Array, b: jax.Array, data_range: float = 255.0) -> jax.Array:
  """Per-image SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
  population (co)variances, mean over the valid window positions and channels (the same value as
  skimage's structural_similarity(gaussian_weights=True, use_sample_covariance=False)).

  a, b: [B, H, W, C] (H, W >= 11) on a 0..data_range scale -> float32 [B].
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  if a.shape != b.shape or a.ndim != 4 or min(a.shape[1:3]) < SSIM_WINDOW:
    raise ValueError(f"ssim needs two [B, H, W, C] images with H, W >= {SSIM_WINDOW}, got "
                     f"{a.shape} and {b.shape}.")
  g = _gaussian_1d()
  c1 = (SSIM_K1 * data_range) ** 2
  c2 = (SSIM_K2 * data_range) ** 2
  mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
  var_a = _filter_valid(a * a, g) - mu_a**2
  var_b = _filter_valid(b * b, g) - mu_b**2
  cov = _filter_valid(a * b, g) - mu_a * mu_b
  num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
  den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
  return jnp.mean(num / den, axis=(1, 2, 3))


@dataclasses.dataclass
class _Row:
  psnr_sum: float = 0.0
  ssim_sum: float = 0.0
  count: int = 0
  features: list = dataclasses.field(default_factory=list)


def row_name(rounds: int | None) -> str:
  return "full" if rounds is None else f"HBQ M={rounds}"


class ReconEvaluator:
  """Accumulates PSNR / SSIM (and Inception features for rFID) over batches of images.

  Args:
    module: the HBQ tokenizer (grn_jax.models.build_tokenizer).
    params: its params.
    rounds: rows of the table: None = the float latent, M = HBQ with M rounds.
    feature_fn: optional grn_jax.evaluation.inception.make_feature_fn(...) for rFID.
  """

  def __init__(self, module, params, rounds: Sequence[int | None] = (None, *range(1, 9)),
               feature_fn=None):
    self.rounds = tuple(rounds)
    self.params = params
    self.feature_fn = feature_fn
    self.rows = {r: _Row() for r in self.rounds}
    self.real_features: list[np.ndarray] = []
    self._encode = jax.jit(lambda p, x: tokenizer_io.encode_latents(module, p, x))
    self._decode = jax.jit(lambda p, z: tokenizer_io.to_uint8(
        tokenizer_io.decode_latents(module, p, z)))
    self._hbq = {r: jax.jit(lambda z, r=r: hbq.dequantize(hbq.quantize(z, r, "ind"), r, "ind"))
                 for r in self.rounds if r is not None}
    self._metrics = jax.jit(lambda x, y: (psnr(x, y), ssim(x, y)))

  def add(self, images: np.ndarray, valid: int | None = None) -> None:
    """images: uint8 [B, H, W, 3]; only the first `valid` rows count (padding after them)."""
    valid = len(images) if valid is None else valid
    latent = self._encode(self.params, images)
    if self.feature_fn is not None:
      self.real_features.append(self.feature_fn(images[:valid])["pool"])
    for r in self.rounds:
      z = latent if r is None else self._hbq[r](latent)
      recon = self._decode(self.params, z)
      p, s = self._metrics(recon, images)
      row = self.rows[r]
      row.psnr_sum += float(np.sum(np.asarray(p)[:valid]))
      row.ssim_sum += float(np.sum(np.asarray(s)[:valid]))
      row.count += valid
      if self.feature_fn is not None:
        row.features.append(self.feature_fn(np.asarray(recon)[:valid])["pool"])

  def results(self) -> dict[str, dict[str, float]]:
    """{row name: {psnr, ssim[, rfid]}}."""
    from grn_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
    out = {}
    real_stats = None
    if self.feature_fn is not None and self.real_features:
      real_stats = metrics.feature_statistics(np.concatenate(self.real_features))
    for r, row in self.rows.items():
      if not row.count:
        raise ValueError("no images were evaluated.")
      res = dict(psnr=row.psnr_sum / row.count, ssim=row.ssim_sum / row.count)
      if real_stats is not None:
        try:
          res["rfid"] = metrics.frechet_distance(
              *metrics.feature_statistics(np.concatenate(row.features)), *real_stats)
        except ValueError as e:  # too few images for a 2048-d covariance
          logging.warning("rFID of %s is undefined: %s", row_name(r), e)
          res["rfid"] = float("nan")
      out[row_name(r)] = res
    return out


def format_table(results: dict[str, dict[str, float]], num_images: int) -> str:
  """A plain-text table: one row per latent kind, columns PSNR / SSIM [/ rFID]."""
  has_rfid = any("rfid" in v for v in results.values())
  header = f"{'latent':<12}{'PSNR (dB)':>11}{'SSIM':>9}" + (f"{'rFID':>10}" if has_rfid else "")
  lines = [f"tokenizer reconstruction on {num_images} images", header, "-" * len(header)]
  for name, res in results.items():
    line = f"{name:<12}{res['psnr']:>11.3f}{res['ssim']:>9.4f}"
    if has_rfid:
      line += f"{res['rfid']:>10.3f}"
    lines.append(line)
  return "\n".join(lines)


def padded_batches(images: Iterable[np.ndarray], batch_size: int
                   ) -> Iterable[tuple[np.ndarray, int]]:
  """Groups uint8 [H, W, 3] images into fixed-size batches (the last one zero-padded)."""
  buf: list[np.ndarray] = []
  for image in images:
    buf.append(image)
    if len(buf) == batch_size:
      yield np.stack(buf), batch_size
      buf = []
  if buf:
    n = len(buf)
    buf += [np.zeros_like(buf[0])] * (batch_size - n)
    yield np.stack(buf), n

