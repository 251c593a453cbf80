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
        return jax.lax.platform_dependent(a, b, cpu=_bfloat16_as_float32,
                                          default=_bfloat16_native)
    raise ValueError(f"matmul dtype must be 'float32' or 'bfloat16', got {dtype!r}")


def _bfloat16_native(a: Array, b: Array) -> Array:
    """bfloat16 operands, float32 accumulation, in the backend's own bfloat16 kernel."""
    return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                      preferred_element_type=jnp.float32)


def _bfloat16_as_float32(a: Array, b: Array) -> Array:
    """The same product in float32 arithmetic, for CPUs: operands rounded to bfloat16 and
    widened back, so every product of two 8-bit significands is exact in float32's 24 bits and
    the sums accumulate in float32, as in :func:`_bfloat16_native`. XLA's CPU runtime has no
    bfloat16 kernel for a product that it does not fuse (``DotThunk``: "Unsupported element type
    BF16 x BF16 = F32"), and which products it fuses depends on the whole program."""
    def widened(v: Array) -> Array:
        return v.astype(jnp.bfloat16).astype(jnp.float32)

    return jnp.matmul(widened(a), widened(b), precision=jax.lax.Precision.HIGHEST)
