"""PSNR and SSIM of test images against reference images (super-resolution outputs, or the
bicubic baseline, against the real high-resolution images).

Images are uint8 in [0, 255] or float in [0, 1], shaped [N, H, W, C] (or one [H, W, C] image);
both are brought to float64 on the [0, 1] scale (L = 1), which leaves PSNR and SSIM unchanged.

- PSNR = 10 log10(L^2 / MSE) per image, MSE over all pixels and channels; mean over images
  (inf for identical images).
- SSIM per Wang et al. 2004: Gaussian window 11x11 with sigma 1.5 (normalised to sum 1),
  K1 = 0.01, K2 = 0.03, local statistics over 'valid' window positions only,
      SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))
  with C1 = (K1 L)^2, C2 = (K2 L)^2; averaged over the map, then channels, then images.
  This is the definition ``tf.image.ssim`` implements (tested against it).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .feature_stats import check_finite

K1, K2 = 0.01, 0.03


def compute_image_quality(reference, test, window_size: int = 11, sigma: float = 1.5) -> dict[str, float]:
    """``{"psnr": mean dB, "ssim": mean SSIM in [-1, 1]}`` of ``test`` against ``reference``."""
    reference, test = _image_pair(reference, test)
    return {"psnr": _psnr(reference, test), "ssim": _ssim(reference, test, window_size, sigma)}


def psnr(reference, test) -> float:
    """Mean PSNR in dB over the images."""
    return _psnr(*_image_pair(reference, test))


def ssim(reference, test, window_size: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM over the images."""
    return _ssim(*_image_pair(reference, test), window_size, sigma)


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = np.mean((reference - test) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return float(np.mean(-10.0 * np.log10(mse)))


def _ssim(x: np.ndarray, y: np.ndarray, window_size: int, sigma: float) -> float:
    if min(x.shape[1:3]) < window_size:
        raise ValueError(f"SSIM: images of {x.shape[1]}x{x.shape[2]} are smaller than the "
                         f"{window_size}x{window_size} window")
    window = np.exp(-0.5 * ((np.arange(window_size) - (window_size - 1) / 2) / sigma) ** 2)
    window /= window.sum()

    def local_mean(image):  # separable Gaussian filter over 'valid' positions
        rows = sliding_window_view(image, window_size, axis=1) @ window
        return sliding_window_view(rows, window_size, axis=2) @ window

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y
    c1, c2 = K1**2, K2**2  # L = 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean(axis=(1, 2)).mean())  # same as map, then channel, then image means


def _image_pair(reference, test) -> tuple[np.ndarray, np.ndarray]:
    reference, test = _unit_images(reference, "reference images"), _unit_images(test, "test images")
    if reference.shape != test.shape:
        raise ValueError(f"reference images have shape {reference.shape} but test images {test.shape}")
    return reference, test


def _unit_images(x, name: str) -> np.ndarray:
    """[N, H, W, C] float64 in [0, 1] from uint8 or [0, 1] float images."""
    images = np.asarray(x)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"{name}: expected [N, H, W, C] or [H, W, C], got shape {images.shape}")
    if images.dtype == np.uint8:
        return images / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{name}: expected uint8 or float images in [0, 1], got dtype {images.dtype}")
    check_finite(images, name)
    if images.min() < -1e-6 or images.max() > 1 + 1e-6:
        raise ValueError(f"{name}: float images must lie in [0, 1], found {images.min()}..{images.max()}")
    return np.clip(images.astype(np.float64), 0.0, 1.0)
