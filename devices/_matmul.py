"""The simulator's matrix products at a chosen operand precision (not physics: arithmetic)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def matmul(a: Array, b: Array, dtype: str = "float32") -> Array:
    """``a @ b`` as float32, with both operands first rounded to ``dtype``.

    ``dtype``: ``float32`` (a plain float32 product) or ``bfloat16`` (operands rounded to
    bfloat16, 8 significant bits, products accumulated in float32: what the matrix units of
    GPUs and TPUs compute fast). The rounding is explicit, so it is the same on every backend.
    ``a``: ``(..., m, k)``, ``b``: ``(k, n)``; returns ``(..., m, n)`` float32.
    """
    if dtype == "float32":
        return a @ b
    if dtype == "bfloat16":
        return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                          preferred_element_type=jnp.float32)
    raise ValueError(f"matmul dtype must be 'float32' or 'bfloat16', got {dtype!r}")
