"""Transfer sets: the inputs on which teachers label and students learn (numpy in, numpy out)."""

from __future__ import annotations

import jax
import numpy as np

from mortal import ff


def random_fraction(x: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A random ``fraction`` (0, 1] of the images, without labels."""
    if not 0 < fraction <= 1:
        raise ValueError(f"transfer fraction must lie in (0, 1], got {fraction}")
    n = max(1, round(fraction * x.shape[0]))
    idx = np.random.default_rng(seed).choice(x.shape[0], n, replace=False)
    return x[np.sort(idx)]


def without_classes(x: np.ndarray, y: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """The images whose class is not in ``classes`` (Hinton et al. 2015's omitted-3 set)."""
    keep = ~np.isin(y, np.asarray(classes))
    if not keep.any():
        raise ValueError(f"leaving out classes {classes} leaves no image in the transfer set")
    return x[keep]


def noise_inputs(n: int, n_inputs: int, seed: int = 0) -> np.ndarray:
    """Data-free transfer: ``n`` uniform-noise images in [0, 1]."""
    return np.random.default_rng(seed).uniform(0, 1, (n, n_inputs)).astype(np.float32)


def hybrid_inputs(x: np.ndarray, n: int, image_shape: tuple[int, int], seed: int = 0,
                  blurs: int = 6) -> np.ndarray:
    """Synthetic transfer: ``n`` hybrids of pairs of real images (blurred random masks)."""
    rng = np.random.default_rng(seed)
    a = x[rng.integers(0, x.shape[0], n)]
    cfg = ff.FFConfig(mode="unsupervised", image_shape=image_shape, hybrid_blurs=blurs)
    return np.asarray(ff.hybrid_images(jax.random.key(seed), a, cfg))
