"""The c2c hash generator: right distributions, independent streams, deterministic, vmappable."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from devices import _noise

N = 200_000


def test_uniform_is_uniform_on_the_unit_interval() -> None:
    u = np.asarray(_noise.uniform(jax.random.key(0), (N,)))
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    counts = np.histogram(u, bins=64, range=(0, 1))[0]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_normal_is_standard_normal() -> None:
    z = np.asarray(_noise.normal(jax.random.key(1), (N,)))
    assert z.dtype == np.float32 and np.all(np.isfinite(z))
    assert abs(z.mean()) < 5 / np.sqrt(N) and abs(z.std() - 1) < 0.01
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(stats.kurtosis(z)) < 0.05  # Gaussian tails, not a sum of a few uniforms
    assert np.abs(z).max() < 5.9


def test_a_normal_pair_is_two_independent_standard_normals() -> None:
    a, b = (np.asarray(z) for z in _noise.normal_pair(jax.random.key(8), (N,)))
    for z in (a, b):
        assert abs(z.mean()) < 5 / np.sqrt(N) and abs(z.std() - 1) < 0.01
        assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(N)
    # independence, not just zero correlation: a² + b² is exponential with mean 2 (chi² with
    # 2 degrees of freedom), and the angle is uniform
    assert stats.kstest(a**2 + b**2, "expon", args=(0, 2)).pvalue > 1e-3
    assert stats.kstest(np.arctan2(b, a), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3
    assert abs(np.corrcoef(a**2, b**2)[0, 1]) < 5 / np.sqrt(N)


def test_the_words_of_one_key_are_independent_streams() -> None:
    w = [np.asarray(x) for x in _noise.words(jax.random.key(9), (N,), 3)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert abs(np.corrcoef(w[i] / 2.0**32, w[j] / 2.0**32)[0, 1]) < 5 / np.sqrt(N)
            assert np.count_nonzero(w[i] == w[j]) <= 3  # coincide only by chance (~1e-5)
    np.testing.assert_array_equal(w[0], _noise.bits(jax.random.key(9), (N,)))


def test_extreme_words_give_finite_symmetric_normals() -> None:
    # the words at the ends of the uniform grid: log(0) would give an infinite normal once in
    # ~2^24 draws, i.e. in nearly every program() call on a large device
    ends = jnp.asarray([0, 255, 2**32 - 256, 2**32 - 1], jnp.uint32)
    angle_zero = jnp.zeros(4, jnp.uint32)
    radius_cos, radius_sin = (np.asarray(z) for z in
                              _noise.normal_pair_from_bits(ends, angle_zero))
    assert np.all(np.isfinite(radius_cos)) and np.abs(radius_cos).max() < 5.9
    # u₁ = 2^-25 (word 0): the largest radius, sqrt(50 ln 2); angle 0 → all of it in cos
    assert radius_cos[0] == radius_cos[1] and abs(radius_cos[0] - np.sqrt(50 * np.log(2))) < 1e-4
    assert abs(radius_cos[-1]) < 1e-3 and np.abs(radius_sin).max() < 1e-5
    # angles u and 1 − u give the same cos and opposite sin; u and u + ½ flip both (grid steps m)
    m = jnp.asarray([1, 7, 12345, 2**22], jnp.uint32)
    radius = jnp.zeros(4, jnp.uint32)
    c1, s1 = _noise.normal_pair_from_bits(radius, m << 8)
    c2, s2 = _noise.normal_pair_from_bits(radius, (jnp.uint32(2**24) - m) << 8)
    c3, s3 = _noise.normal_pair_from_bits(radius, (m + jnp.uint32(2**23)) << 8)
    np.testing.assert_allclose(c1, c2, atol=2e-5)
    np.testing.assert_allclose(s1, -s2, atol=2e-5)
    np.testing.assert_allclose(c1, -c3, atol=2e-5)
    np.testing.assert_allclose(s1, -s3, atol=2e-5)
    u = np.asarray(_noise.uniform(jax.random.key(0), (4 * N,)))
    assert u.max() < 1.0


def test_a_large_draw_has_no_infinities() -> None:
    z = _noise.normal(jax.random.key(7), (2**25,))  # 2^25 words: each grid end expected ~4 times
    assert bool(jnp.all(jnp.isfinite(z)))


def test_neighbours_and_keys_are_uncorrelated() -> None:
    a = np.asarray(_noise.normal(jax.random.key(2), (N,)))
    b = np.asarray(_noise.normal(jax.random.key(3), (N,)))
    c = np.asarray(_noise.normal(jax.random.fold_in(jax.random.key(2), 1), (N,)))
    limit = 5 / np.sqrt(N)
    for lag in (1, 2, 1000):
        assert abs(np.corrcoef(a[:-lag], a[lag:])[0, 1]) < limit
    assert abs(np.corrcoef(a, b)[0, 1]) < limit
    assert abs(np.corrcoef(a, c)[0, 1]) < limit
    # no shifted copy of one stream inside another (a Weyl-sequence failure mode): 32-bit words
    # of two keys coincide only by chance (expected 5,000 · 200,000 / 2^32 ≈ 0.2 times)
    wa = np.asarray(_noise.bits(jax.random.key(2), (5000,)))
    wb = np.asarray(_noise.bits(jax.random.key(3), (N,)))
    assert len(np.intersect1d(wa, wb)) <= 3


def test_bits_are_balanced_per_bit_position() -> None:
    w = np.asarray(_noise.bits(jax.random.key(4), (N,)))
    ones = ((w[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(axis=0)
    assert np.all(np.abs(ones - 0.5) < 5 * 0.5 / np.sqrt(N))


def test_same_key_same_numbers_and_shape_is_a_reshape() -> None:
    k = jax.random.key(5)
    a = _noise.normal(k, (30, 40))
    assert a.shape == (30, 40)
    np.testing.assert_array_equal(a, _noise.normal(k, (30, 40)))
    np.testing.assert_array_equal(np.asarray(a).ravel(), _noise.normal(k, (1200,)))
    assert _noise.uniform(k, (0, 3)).shape == (0, 3)


def test_words_hash_the_flat_index_whatever_the_shape() -> None:
    """The counter is summed from a row and a column term (so XLA cannot hoist it out of a
    training loop as a stored array); it must equal the flat index's, as written out here."""
    key = jax.random.key(7)
    seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32))

    def finalise(x: np.ndarray) -> np.ndarray:
        x = x ^ (x >> np.uint32(16))
        x = x * np.uint32(0x7FEB352D)
        x = x ^ (x >> np.uint32(15))
        x = x * np.uint32(0x846CA68B)
        return x ^ (x >> np.uint32(16))

    for shape in [(13, 7), (3, 4, 5), (11,), (), (0, 3), (1001, 1000)]:
        index = np.arange(int(np.prod(shape)), dtype=np.uint32).reshape(shape)
        with np.errstate(over="ignore"):
            index = index * np.uint32(0x9E3779B9)
            expected = [finalise(finalise(index + seed[2 * i]) ^ seed[2 * i + 1])
                        for i in range(2)]
        for got, want in zip(_noise.words(key, shape, 2), expected, strict=True):
            assert got.shape == shape
            np.testing.assert_array_equal(np.asarray(got), want)


def test_vmap_over_keys_equals_one_call_per_key() -> None:
    keys = jax.random.split(jax.random.key(6), 4)
    batched = jax.jit(jax.vmap(lambda k: _noise.uniform(k, (7, 9))))(keys)
    for i in range(4):
        np.testing.assert_array_equal(batched[i], _noise.uniform(keys[i], (7, 9)))
    assert not jnp.array_equal(batched[0], batched[1])


def test_too_many_elements_is_refused() -> None:
    with pytest.raises(ValueError, match="2\\^32"):
        _noise.bits(jax.random.key(0), (2**16, 2**16))
