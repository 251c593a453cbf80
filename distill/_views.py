"""Views: a fresh, shared transformation of every transfer minibatch (jax, inside the epoch).

Beyer et al. (2022, "Knowledge distillation: a good teacher is patient and consistent") match a
teacher's function on augmented views that teacher and student see identically ("consistent"),
rather than on a fixed set of images: each view is a new input on which the teacher's answer is
measured, so a small transfer set yields more of the teacher's function. Here a view is the
image shifted by a whole number of pixels; the teacher is measured on the same shifted batch the
students learn from (no stale labels of the unshifted image). A mixed view (mixup, Zhang et
al. 2018, which Beyer et al. use for function matching) blends two images of the minibatch: an
input between two digits, where a teacher's soft answer says most about its function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def shifted_views(key: Array, x: Array, image_shape: tuple[int, int], max_shift: int) -> Array:
    """Every image of ``x`` ``(B, H·W)`` moved by its own ``(dy, dx)``, each drawn uniformly from
    ``{−max_shift, …, max_shift}``; pixels moved in from outside are 0 (background).

    ``view[i, r, c] = x[i, r − dy_i, c − dx_i]``. ``(B, H·W)``, the dtype of ``x``. With
    ``max_shift = 0`` the images are returned unchanged.
    """
    h, w = image_shape
    b, d = x.shape
    if h * w != d:
        raise ValueError(f"shifted views: image_shape {image_shape} has {h * w} pixels, the "
                         f"inputs have {d}")
    if max_shift == 0:
        return x
    s = max_shift
    shifts = jax.random.randint(key, (b, 2), -s, s + 1)
    padded = jnp.pad(x.reshape(b, h, w), ((0, 0), (s, s), (s, s)))

    def one(img: Array, shift: Array) -> Array:
        return jax.lax.dynamic_slice(img, (s - shift[0], s - shift[1]), (h, w))

    return jax.vmap(one)(padded, shifts).reshape(b, d)


def mixed_views(key: Array, x: Array, alpha: float) -> Array:
    """Every image of ``x`` ``(B, D)`` blended with another image of the same minibatch:
    ``view_i = λ_i x_i + (1 − λ_i) x_π(i)``, π a random permutation, ``λ_i ~ Beta(α, α)`` drawn
    per image (α = 1: uniform; small α: most views near one of their two images).

    ``(B, D)``, the dtype of ``x``; pixel values stay within the range of the inputs. ``alpha``
    must be > 0.
    """
    if not alpha > 0:
        raise ValueError(f"mixed views: alpha must be > 0, got {alpha}")
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha, (x.shape[0], 1), dtype=x.dtype)
    partner = x[jax.random.permutation(k_perm, x.shape[0])]
    return lam * x + (1 - lam) * partner
