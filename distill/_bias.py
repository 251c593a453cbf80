"""Per-class bias correction for classes missing from a transfer set (Hinton et al. 2015).

What a missing class costs is mostly a per-class offset of the student's scores; it is fitted on a
small labelled set and added to the scores at evaluation time (a digital correction in the
periphery: the device is not touched).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

Array = jax.Array


def fit_class_bias(scores: Array, labels: Array, *, temperature: float = 1.0, steps: int = 300,
                   lr: float = 0.1) -> Array:
    """Offsets ``b`` ``(C,)`` minimising the cross-entropy of ``softmax((scores + b) / T)``.

    Args:
        scores: ``(N, C)`` student scores (readout logits or goodness scores) on a labelled set.
        labels: ``(N,)`` true classes.
    Returns:
        ``b`` with zero mean (only differences between classes matter).
    """
    scores = jnp.asarray(scores, jnp.float32)
    opt = optax.adam(lr)

    def loss(b: Array) -> Array:
        logp = jax.nn.log_softmax((scores + b) / temperature, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))

    def step(carry: tuple[Array, optax.OptState], _: None) -> tuple[tuple[Array, optax.OptState],
                                                                      None]:
        b, state = carry
        g = jax.grad(loss)(b)
        updates, state = opt.update(g, state)
        return (optax.apply_updates(b, updates), state), None

    b0 = jnp.zeros(scores.shape[-1], jnp.float32)
    (b, _), _ = jax.lax.scan(step, (b0, opt.init(b0)), None, length=steps)
    return b - b.mean()


def corrected_predictions(test_scores: Array, val_scores: Array, val_labels: Array, *,
                          temperature: float = 1.0) -> np.ndarray:
    """Predicted classes ``(N,)`` for ``test_scores`` ``(N, C)`` after the offsets
    ``fit_class_bias`` fits on ``val_scores`` / T and ``val_labels`` (a labelled set)."""
    b = fit_class_bias(jnp.asarray(val_scores) / temperature, jnp.asarray(val_labels))
    return np.asarray((jnp.asarray(test_scores) / temperature + b).argmax(-1))


def tune_class_offset(scores: np.ndarray, labels: np.ndarray, cls: int) -> float:
    """The offset of class ``cls``'s scores alone that maximises accuracy on a labelled set.

    Hinton et al. (2015) raised the bias of the class missing from the transfer set by hand, to
    the value that maximised overall accuracy. Here that value is found exactly: as the offset
    ``b`` grows, example ``i`` switches to ``cls`` once ``b`` exceeds
    ``d_i = max_{c ≠ cls} s_ic − s_i,cls``, so accuracy is a step function of ``b`` with steps
    at the ``d_i``. Returns the middle of the best step (the one nearest 0 among equals).

    Args:
        scores: ``(N, C)`` student scores on the labelled set (NumPy).
        labels: ``(N,)`` true classes.
        cls: the class whose offset is tuned.
    Returns:
        ``b``: add it to ``scores[:, cls]``.
    """
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels)
    if s.ndim != 2 or y.shape != (s.shape[0],) or not 0 <= cls < s.shape[1]:
        raise ValueError(f"tune_class_offset: scores (N, C) and labels (N,) with 0 <= cls < C; "
                         f"got {s.shape}, {y.shape}, cls={cls}")
    others = np.delete(s, cls, axis=1)
    other_class = np.delete(np.arange(s.shape[1]), cls)[others.argmax(1)]
    d = others.max(1) - s[:, cls]  # cls wins once b > d
    is_cls = y == cls
    right_otherwise = (~is_cls) & (other_class == y)
    steps = np.unique(d)
    # candidate offsets: below every step, between neighbours, above every step
    cand = np.concatenate([[steps[0] - 1.0], (steps[:-1] + steps[1:]) / 2, [steps[-1] + 1.0]])
    d_cls, d_right = np.sort(d[is_cls]), np.sort(d[right_otherwise])
    acc = (np.searchsorted(d_cls, cand, side="left")  # examples of cls with d < b: now right
           + d_right.size - np.searchsorted(d_right, cand, side="left"))  # d >= b: still right
    best = np.flatnonzero(acc == acc.max())
    return float(cand[best[np.argmin(np.abs(cand[best]))]])
