"""Per-class bias correction for classes missing from a transfer set (Hinton et al. 2015).

What a missing class costs is mostly a per-class offset of the student's scores; it is fitted on a
small labelled set and added to the scores at evaluation time (a digital correction in the
periphery: the device is not touched).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
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
