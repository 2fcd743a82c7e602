"""Mode coverage: which classes the generated samples fall in, by the domain classifier.

From the histogram q of predicted classes of the fakes (and p of the reals, when given):
  classes_present           number of classes predicted at least once
  class_entropy             H(q) in nats
  class_entropy_normalized  H(q) / log(C), 1 for a uniform histogram, 0 for a single class
  class_kl_uniform          KL(q || uniform) = log(C) - H(q)
  class_kl_real             KL(q || p); inf if fakes land in a class the real samples never do
"""
from __future__ import annotations

import numpy as np
from scipy.special import xlogy

from .feature_stats import check_finite


def compute_mode_coverage(real, fake, num_classes: int | None = None) -> dict[str, float]:
    """Histogram statistics of predicted classes; ``real`` may be None (no ``class_kl_real``).

    ``real``/``fake`` are class probabilities [N, C] (classes by argmax) or integer labels [N]
    (then ``num_classes`` is required). All values are floats.
    """
    fake_labels, num_classes = _labels(fake, "fake predictions", num_classes)
    fake_hist = _histogram(fake_labels, num_classes)
    entropy = -xlogy(fake_hist, fake_hist).sum()
    result = {
        "classes_present": float(np.count_nonzero(fake_hist)),
        "class_entropy": float(entropy),
        "class_entropy_normalized": float(entropy / np.log(num_classes)),
        "class_kl_uniform": float(np.log(num_classes) - entropy),
    }
    if real is not None:
        real_hist = _histogram(_labels(real, "real predictions", num_classes)[0], num_classes)
        with np.errstate(divide="ignore"):
            result["class_kl_real"] = float((xlogy(fake_hist, fake_hist) - xlogy(fake_hist, real_hist)).sum())
    return result


def _labels(x, name: str, num_classes: int | None) -> tuple[np.ndarray, int]:
    array = np.asarray(x)
    if array.ndim in (1, 2) and array.shape[0] == 0:
        raise ValueError(f"{name}: no predictions to count")
    if array.ndim == 2:
        if num_classes is not None and num_classes != array.shape[1]:
            raise ValueError(f"{name}: {array.shape[1]} class probabilities per row but num_classes={num_classes}")
        check_finite(array, name)
        return array.argmax(axis=1), _checked_num_classes(array.shape[1], name)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected probabilities [N, C] or integer labels [N], "
                         f"got {array.dtype} shape {array.shape}")
    if num_classes is None:
        raise ValueError(f"{name}: num_classes is required with integer labels")
    num_classes = _checked_num_classes(num_classes, name)
    if array.min() < 0 or array.max() >= num_classes:
        raise ValueError(f"{name}: labels must lie in [0, {num_classes}), found {array.min()}..{array.max()}")
    return array, num_classes


def _checked_num_classes(num_classes: int, name: str) -> int:
    if num_classes < 2:
        raise ValueError(f"{name}: mode coverage needs at least 2 classes, got {num_classes}")
    return int(num_classes)


def _histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=num_classes) / labels.size
