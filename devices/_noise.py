"""Per-use (c2c) random draws: a counter-based hash generator, cheap enough to run per synapse.

Every ``program`` call draws three random numbers per synapse (stochastic rounding, step noise,
write noise) and every ``measure`` one per output. With JAX's default generator (Threefry-2x32,
20 rounds, about 50 integer operations per 32-bit word) those draws were most of an ``rram``
training step on a CPU: 2.8 M synapses of a 784-1000-1000-1000 device took about 20 ms per draw,
against about 18 ms for the whole ``ideal`` step's arithmetic.

Here each element's 32 random bits are a hash of its index and of two seed words taken from the
caller's key (one small Threefry call per array): a Weyl step, then two rounds of an
integer finaliser (xor-shift / multiply with the "lowbias32" constants published by
C. Wellons, 2018, "Prospecting for hash functions"), about 15 operations that XLA fuses into the
consumer. ``words`` gives several independent words per element from one key (one seed pair
each). Uniforms have 24-bit resolution on [0, 1). Normals come in pairs from two words by the
Box–Muller transform (G. E. P. Box and M. E. Muller, 1958, Ann. Math. Statist. 29, 610):
``r = sqrt(−2 ln u₁)``, ``(r cos 2πu₂, r sin 2πu₂)``, two independent standard normals for one
logarithm, with cos and sin evaluated as Taylor polynomials on [−π, π] (absolute error < 1e-6);
tails reach ±5.89 σ (``u₁ ≥ 2^-25``). What is given up is cryptographic strength, which a noise
model does not need. Draws are a pure function of ``(key, shape)``: the same key gives the same
numbers on the same machine, and ``vmap`` over keys gives each device its own stream.
Fabrication (d2d draws, once per device) keeps JAX's generator.
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


def words(key: Array, shape: tuple[int, ...], count: int) -> tuple[Array, ...]:
    """``count`` independent ``uint32`` arrays of ``shape`` (32 random bits per element each), a
    function of ``key`` only; each word has its own seed pair from one Threefry call."""
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"devices noise: {size} elements exceed the 2^32 counter range")
    seed = jax.random.bits(key, (2 * count,), jnp.uint32)
    # index · Weyl + seed (mod 2^32), with index = row · n_cols + col, summed as a per-row term
    # (which carries the seed) and a per-column term: the same words as hashing the flat index,
    # but nothing of full size depends on the position alone, so XLA cannot hoist the counter out
    # of a training loop into a stored array that every write loop would read (4 bytes per
    # element and loop)
    n_cols = shape[-1] if shape else 1
    rows = jax.lax.iota(jnp.uint32, size // max(n_cols, 1)) * _U32((n_cols * _WEYL) % 2**32)
    cols = jax.lax.iota(jnp.uint32, n_cols) * _U32(_WEYL)

    def counter(offset: Array) -> Array:
        return ((rows + offset)[:, None] + cols[None, :]).reshape(shape)

    return tuple(_finalise(_finalise(counter(seed[2 * i])) ^ seed[2 * i + 1])
                 for i in range(count))


def bits(key: Array, shape: tuple[int, ...]) -> Array:
    """32 random bits per element: ``uint32`` array of ``shape``, a function of ``key`` only."""
    return words(key, shape, 1)[0]


def uniform_from_bits(b: Array) -> Array:
    """Uniform on [0, 1) in steps of 2^-24 (the word's top 24 bits): float32 like ``b``."""
    return (b >> 8).astype(jnp.float32) * np.float32(2.0**-24)


def uniform(key: Array, shape: tuple[int, ...]) -> Array:
    """Uniform on [0, 1) in steps of 2^-24: float32 array of ``shape``."""
    return uniform_from_bits(bits(key, shape))


# Taylor coefficients of cos t and sin t / t in t², highest first; on |t| ≤ π the first omitted
# terms are π^18/18! < 1.4e-7 and π^19/19! < 4.5e-8, below float32 rounding of the sums
_COS = tuple((-1) ** k / math.factorial(2 * k) for k in range(9))[::-1]
_SIN = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(9))[::-1]


def _poly(coefficients: tuple[float, ...], t2: Array) -> Array:
    acc = jnp.full_like(t2, np.float32(coefficients[0]))
    for c in coefficients[1:]:
        acc = acc * t2 + np.float32(c)
    return acc


def normal_pair_from_bits(radius_bits: Array, angle_bits: Array) -> tuple[Array, Array]:
    """Two independent standard normals per element from two ``uint32`` words (Box–Muller).

    ``u₁ = (m₁ + ½) · 2^-24`` from the radius word's top 24 bits (never 0, so ``r`` is finite and
    at most ``sqrt(50 ln 2) ≈ 5.89``); ``u₂ = m₂ · 2^-24`` from the angle word's. Returns
    ``(r cos 2πu₂, r sin 2πu₂)``, float32 arrays of the words' shape. The angle grid is symmetric
    under ``u₂ → 1 − u₂`` and ``u₂ → u₂ ± ½``, so both outputs are symmetric about 0.
    """
    u1 = ((radius_bits >> 8).astype(jnp.float32) + np.float32(0.5)) * np.float32(2.0**-24)
    radius = jnp.sqrt(np.float32(-2.0) * jnp.log(u1))
    # cos 2πu = −cos t and sin 2πu = −sin t with t = 2π(u − ½) ∈ [−π, π)
    t = np.float32(2.0 * math.pi) * (uniform_from_bits(angle_bits) - np.float32(0.5))
    t2 = t * t
    return -radius * _poly(_COS, t2), -radius * t * _poly(_SIN, t2)


def normal_pair(key: Array, shape: tuple[int, ...]) -> tuple[Array, Array]:
    """Two independent standard normal float32 arrays of ``shape`` (one logarithm per pair)."""
    return normal_pair_from_bits(*words(key, shape, 2))


def normal(key: Array, shape: tuple[int, ...]) -> Array:
    """Standard normal: float32 array of ``shape``. Both halves of ``⌈size/2⌉`` Box–Muller pairs:
    the first ``⌈size/2⌉`` elements (row-major) are the cos halves, the rest the sin halves."""
    size = math.prod(shape)
    first, second = normal_pair(key, ((size + 1) // 2,))
    return jnp.concatenate([first, second])[:size].reshape(shape)
