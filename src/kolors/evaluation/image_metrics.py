"""Full-reference image similarity: PSNR and SSIM of images in [0, 1] (H, W, C float arrays)."""

from __future__ import annotations

import numpy as np

SSIM_SIGMA = 1.5  # Gaussian window of the original SSIM paper (Wang et al. 2004): 11 taps, sigma 1.5
SSIM_RADIUS = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 1.0 (inf for identical images)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity over the image and its channels, with a Gaussian window."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_a, mu_b = _blur(a), _blur(b)
    var_a = _blur(a * a) - mu_a**2
    var_b = _blur(b * b) - mu_b**2
    cov = _blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    r = SSIM_RADIUS
    return float(s[r:-r, r:-r].mean())  # only where the window lies inside the image


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter over the two image axes (edges reflected)."""
    taps = np.exp(-0.5 * (np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1) / SSIM_SIGMA) ** 2)
    taps /= taps.sum()
    r = SSIM_RADIUS
    padded = np.pad(x, ((r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(w * padded[i : i + x.shape[0]] for i, w in enumerate(taps))
    return sum(w * rows[:, i : i + x.shape[1]] for i, w in enumerate(taps))
