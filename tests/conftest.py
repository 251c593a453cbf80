"""Shared fixtures: tiny recipes, keys and inputs. Tests run on CPU."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

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
