"""Tokenizer metrics: PSNR / SSIM against numpy references, and the HBQ reconstruction table."""

import jax
import numpy as np
import pytest
from scipy import ndimage

from configs import c2i
from grn_jax import tokenizer_io
from grn_jax.evaluation import recon
from grn_jax.models import build_tokenizer


def _ssim_numpy(a, b, data_range=255.0):
  """skimage-style reference: reflect-mode Gaussian filter (sigma 1.5, truncate 3.5 -> 11 taps),
  population statistics, mean over the map cropped by 5 pixels, averaged over channels."""
  a, b = a.astype(np.float64), b.astype(np.float64)
  c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
  values = []
  for ch in range(a.shape[-1]):
    x, y = a[..., ch], b[..., ch]
    f = lambda z: ndimage.gaussian_filter(z, 1.5, truncate=3.5, mode="reflect")
    ux, uy = f(x), f(y)
    vx, vy, vxy = f(x * x) - ux**2, f(y * y) - uy**2, f(x * y) - ux * uy
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    values.append(s[5:-5, 5:-5].mean())
  return np.mean(values)


def test_psnr_known_values():
  a = np.zeros((2, 4, 4, 3), np.uint8)
  b = a.copy()
  b[0] += 10        # mse 100 -> 10 log10(255^2 / 100)
  b[1, 0, 0, 0] = 255  # mse 255^2 / 48 -> 10 log10(48)
  got = np.asarray(recon.psnr(a, b))
  np.testing.assert_allclose(got, [10 * np.log10(255**2 / 100), 10 * np.log10(48)], rtol=1e-6)
  assert np.isinf(np.asarray(recon.psnr(a, a))).all()


def test_ssim_matches_numpy_reference():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 256, (3, 24, 20, 3)).astype(np.uint8)
  smooth = ndimage.uniform_filter(a.astype(np.float64), size=(1, 3, 3, 1))
  b = np.clip(smooth + rng.normal(0, 8, a.shape), 0, 255).astype(np.uint8)
  got = np.asarray(recon.ssim(a, b))
  want = [_ssim_numpy(a[i], b[i]) for i in range(3)]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(recon.ssim(a, a)), 1.0, atol=1e-5)
  assert 0 < min(got) < 0.9
  with pytest.raises(ValueError, match="H, W >= 11"):
    recon.ssim(a[:, :8, :8], b[:, :8, :8])


def _random_params(module, size, seed=0):
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jax.numpy.zeros((1, size, size, 3))))
  rng = np.random.default_rng(seed)

  def fill(tree):
    fan_in = int(np.prod(tree["kernel"].shape[:-1])) if "kernel" in tree else 1
    return {name: fill(v) if isinstance(v, dict) else
            (rng.uniform(-1, 1, v.shape) / np.sqrt(fan_in)).astype(np.float32)
            if name in ("kernel", "bias") else np.ones(v.shape, np.float32)
            for name, v in tree.items()}

  return fill(shapes["params"])


def test_recon_table_hbq_rows_converge_to_full_precision():
  config = c2i.get_config("variant=tiny")
  module = build_tokenizer(config.tokenizer)
  size = 32
  params = _random_params(module, size)
  rng = np.random.default_rng(1)
  images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(5)]
  evaluator = recon.ReconEvaluator(module, params, rounds=(None, 1, 2, 8))
  for batch, valid in recon.padded_batches(images, 4):
    evaluator.add(batch, valid)
  results = evaluator.results()
  assert list(results) == ["full", "HBQ M=1", "HBQ M=2", "HBQ M=8"]
  assert evaluator.rows[None].count == 5
  # Reference for the full row: decode(encode(x)) image by image, metrics in numpy.
  enc = lambda x: module.apply({"params": params}, x / 127.5 - 1.0, method="encode")
  dec = lambda z: module.apply({"params": params}, z, method="decode")
  full = np.asarray(tokenizer_io.to_uint8(jax.jit(lambda x: dec(enc(x)))(np.stack(images))))
  mse = ((full.astype(np.float64) - np.stack(images)) ** 2).mean(axis=(1, 2, 3))
  assert results["full"]["psnr"] == pytest.approx(np.mean(10 * np.log10(255**2 / mse)), rel=1e-5)
  want_ssim = np.mean([_ssim_numpy(full[i], images[i]) for i in range(5)])
  assert results["full"]["ssim"] == pytest.approx(want_ssim, rel=1e-3)
  # 8 HBQ rounds leave the latent within 2^-9 of the float one: almost the same images.
  assert abs(results["HBQ M=8"]["psnr"] - results["full"]["psnr"]) < 0.05
  table = recon.format_table(results, 5)
  assert "HBQ M=8" in table and "rFID" not in table and "5 images" in table
