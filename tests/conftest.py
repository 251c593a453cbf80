"""Shared fixtures: tiny recipes, keys and inputs. Tests run on CPU."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One XLA compilation cache for the whole test session, shared with the `mortal` subprocesses of
# the end-to-end tests (they inherit the environment): a program that one test compiled is loaded,
# not compiled again, by the next process that builds it. Compilation is most of a tiny run's
# time. The cache starts empty in every session and is removed at its end, so nothing compiled by
# another revision is ever reused; the cache key covers the program, XLA_FLAGS and the jax
# version, and a loaded program computes the same bits as a fresh compile.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _XLA_CACHE = tempfile.mkdtemp(prefix="mortal-tests-xla-cache-")
    atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _XLA_CACHE
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

# Tests compile far more than they compute: tiny networks, a new program in nearly every test.
# The tests, and the `mortal` processes they start, run with JAX's switch that skips most of
# XLA's code optimisation (session 32, 2-core CPU without AVX-512: three of the slowest tests
# 236 -> 126 s, the suite in one process 31 -> 25 min). The programs run the same operations;
# their rounding may differ from optimised code, so every claim is tested within one setting.
# The bit-equalities that benchmark rows rely on run with XLA's default, as users' runs do:
# tests marked `full_optimization` (a student slice = the whole run, vmapped = separate) and
# the sharded-run subprocess of tests/mortal/test_parallel.py (sharded = unsharded).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax
import pytest

import devices

TINY = (12, 8, 6)


@pytest.fixture
def key() -> jax.Array:
    return jax.random.key(0)


@pytest.fixture
def x_batch() -> jax.Array:
    return jax.random.uniform(jax.random.key(123), (5, TINY[0]))


@pytest.fixture(params=sorted(devices.PRESETS))
def preset_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def _xla_optimisation(request: pytest.FixtureRequest,
                      monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """XLA's default optimisation for tests marked ``full_optimization`` (and the processes they
    start); programs compiled at the other setting are dropped from JAX's in-memory caches on the
    way in and out (the on-disk cache keys on the setting)."""
    if request.node.get_closest_marker("full_optimization") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "0")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    try:
        yield
    finally:
        jax.clear_caches()
        jax.config.update("jax_disable_most_optimizations", before)
