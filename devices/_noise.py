"""Per-use (c2c) random draws: a counter-based hash generator, cheap enough to run per synapse.

Every ``program`` call draws up to three random numbers per synapse (stochastic rounding, step
noise, write noise) and every ``measure`` one per output. With JAX's default generator
(Threefry-2x32, 20 rounds, about 50 integer operations per 32-bit word) those draws were most of
an ``rram`` training step on a CPU: 2.8 M synapses of a 784-1000-1000-1000 device took about
20 ms per draw, against about 18 ms for the whole ``ideal`` step's arithmetic.

Here each element's 32 random bits are a hash of its index and of two seed words taken from the
caller's key (one small Threefry call per array): a Weyl step, then two rounds of an
integer finaliser (xor-shift / multiply with the "lowbias32" constants published by
C. Wellons, 2018, "Prospecting for hash functions"), about 15 operations that XLA fuses into the
consumer. The distributions are the same as before (uniform on [0, 1) with 24-bit resolution;
standard normal by the inverse error function, tails to ±5.3 σ); what is given up is
cryptographic strength, which a noise model does not need. Draws are a pure function of
``(key, shape)``: the same key gives the same numbers on the same machine, and ``vmap`` over keys
gives each device its own stream. Fabrication (d2d draws, once per device) keeps JAX's generator.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

_U32 = jnp.uint32
_WEYL = 0x9E3779B9  # 2^32 / golden ratio: spreads consecutive indices over the word
_M1, _M2 = 0x7FEB352D, 0x846CA68B  # "lowbias32" multipliers (Wellons 2018)


def _finalise(x: Array) -> Array:
    x = x ^ (x >> 16)
    x = x * _U32(_M1)
    x = x ^ (x >> 15)
    x = x * _U32(_M2)
    return x ^ (x >> 16)


def bits(key: Array, shape: tuple[int, ...]) -> Array:
    """32 random bits per element: ``uint32`` array of ``shape``, a function of ``key`` only."""
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"devices noise: {size} elements exceed the 2^32 counter range")
    seed = jax.random.bits(key, (2,), jnp.uint32)
    index = jax.lax.iota(jnp.uint32, size).reshape(shape)
    return _finalise(_finalise(index * _U32(_WEYL) + seed[0]) ^ seed[1])


def uniform(key: Array, shape: tuple[int, ...]) -> Array:
    """Uniform on [0, 1) in steps of 2^-24: float32 array of ``shape``."""
    return (bits(key, shape) >> 8).astype(jnp.float32) * np.float32(2.0**-24)


def normal_from_bits(b: Array) -> Array:
    """Standard normals from ``uint32`` words: ``√2 · erfinv(u)`` with ``u`` on the 2^23 points
    ``(m + ½) · 2^-22 − 1``, ``m`` = the word's top 23 bits. Every step is exact in float32, so
    ``|u| ≤ 1 − 2^-23`` and ``|values| ≤ 5.3`` (never ±inf); symmetric about 0."""
    m = (b >> 9).astype(jnp.float32)
    u = (m + np.float32(0.5)) * np.float32(2.0**-22) - np.float32(1.0)
    return np.float32(math.sqrt(2.0)) * jax.lax.erf_inv(u)


def normal(key: Array, shape: tuple[int, ...]) -> Array:
    """Standard normal: float32 array of ``shape`` (see ``normal_from_bits``)."""
    return normal_from_bits(bits(key, shape))
