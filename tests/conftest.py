"""Shared fixtures: tiny recipes, keys and inputs. Tests run on CPU."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

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
