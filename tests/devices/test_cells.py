"""Several conductance cells per synapse (Boybat et al. 2018): shapes, the read, the write."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import devices
from devices import DeviceSpec, SpecError, SynapseSpec
from devices._device import mean_over_cells, synapse_shape


def _cells(spec: DeviceSpec, cells: int) -> DeviceSpec:
    return spec.replace(synapse=dataclasses.replace(spec.synapse, cells=cells))


def _requests(d: devices.Device, value: float) -> tuple[jax.Array, ...]:
    return tuple(jnp.full(w.shape[-2:], value, jnp.float32) for w in d.state.weights)


def test_cells_must_be_a_positive_integer() -> None:
    for bad in (0, -2, 1.5, True):
        with pytest.raises(SpecError, match=r"synapse\.cells"):
            DeviceSpec((4, 3), synapse=SynapseSpec(cells=bad))


def test_one_cell_is_the_plain_device(key: jax.Array) -> None:
    spec = devices.preset("rram", (12, 7, 5))
    plain, one = devices.fabricate(spec, key), devices.fabricate(_cells(spec, 1), key)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(one), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_every_cell_has_its_own_physics_and_the_mask_is_per_synapse(key: jax.Array) -> None:
    spec = _cells(devices.preset("harsh", (12, 7, 5)), 3)
    d = devices.fabricate(spec, key)
    info = devices.inspect(d)["layers"][0]
    assert d.state.weights[0].shape == (3, 13, 7)
    assert info["mask"].shape == (13, 7) and info["effective_weights"].shape == (13, 7)
    w_max = np.asarray(info["w_max"])
    assert w_max.shape == (3, 13, 7) and not np.array_equal(w_max[0], w_max[1])
    # an absent synapse carries nothing in any of its cells
    absent = ~np.asarray(info["mask"])
    assert absent.any() and np.all(np.asarray(d.state.weights[0])[:, absent] == 0)


def test_a_read_sees_the_mean_of_the_cells(key: jax.Array) -> None:
    spec = _cells(devices.preset("ideal", (6, 4)), 4)
    d = devices.fabricate(spec, key)
    w = jax.random.normal(jax.random.key(1), (4, 7, 4))
    d = dataclasses.replace(d, state=d.state.with_weights((w,)))
    x = jax.random.normal(jax.random.key(2), (5, 6))
    h = devices.normalize(x)
    mean = np.asarray(w).mean(axis=0)
    expected = np.maximum(np.asarray(h) @ mean[:-1] + mean[-1], 0.0)
    got = np.asarray(devices.measure(d, x).outputs[0])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_write_moves_one_cell_by_cells_times_the_request(key: jax.Array) -> None:
    # constant steps of 1/8 and a request of 3/32: 4 cells x 3/32 = 3 whole pulses, no rounding
    syn = SynapseSpec(w_min=-4.0, w_max=4.0, dw_min=0.125, update_model="constant_step", cells=4)
    d = devices.fabricate(DeviceSpec((6, 5, 3), synapse=syn), key)
    chosen = set()
    for i in range(12):
        new = devices.program(d, _requests(d, 3 / 32), key=jax.random.key(i))
        for w0, w1 in zip(d.state.weights, new.state.weights, strict=True):
            moved = [c for c in range(4) if not np.array_equal(w0[c], w1[c])]
            assert len(moved) == 1
            np.testing.assert_allclose(np.asarray(w1[moved[0]] - w0[moved[0]]), 0.375,
                                       atol=1e-6)
            np.testing.assert_allclose(np.asarray(w1.mean(0) - w0.mean(0)), 3 / 32, atol=1e-6)
            chosen.add(moved[0])
    assert chosen == {0, 1, 2, 3}  # the written cell is drawn anew at each call


def test_the_offsets_of_n_cells_average_to_one_over_root_n(key: jax.Array) -> None:
    base = devices.preset("rram", (200, 300))
    sigma = base.synapse.write_noise * base.synapse.dw_min
    for cells in (1, 4):
        info = devices.inspect(devices.fabricate(_cells(base, cells), key))["layers"][0]
        stored = np.asarray(info["weights"])
        stored = stored if cells == 1 else stored.mean(axis=0)
        offset = np.asarray(info["effective_weights"]) - stored  # read gain 1 in this preset
        assert abs(offset.std() / (sigma / np.sqrt(cells)) - 1) < 0.03


def test_a_population_of_multi_cell_devices_vmaps(key: jax.Array) -> None:
    spec = _cells(devices.preset("rram", (10, 6, 4)), 2)
    pop = devices.spawn(spec, 3, key)
    reqs = tuple(jnp.broadcast_to(r, (3, *r.shape)) for r in _requests(pop[0], 0.01))
    keys = jax.random.split(jax.random.key(5), 3)
    new = jax.vmap(lambda d, r, k: devices.program(d, r, key=k))(pop, reqs, keys)
    alone = devices.program(pop[2], tuple(r[2] for r in reqs), key=keys[2])
    for a, b in zip(new.state.weights, alone.state.weights, strict=True):
        assert np.array_equal(np.asarray(a[2]), np.asarray(b))
    aged = jax.vmap(lambda d: devices.age(d, 1e4))(new)  # drift acts on every cell
    w0, w1 = np.asarray(new.state.weights[0]), np.asarray(aged.state.weights[0])
    assert w1.shape == (3, 2, 11, 6) and np.all(np.abs(w1) <= np.abs(w0))
    assert np.mean(w1[:, 1] != w0[:, 1]) > 0.5


@pytest.mark.parametrize("cells", [2, 3, 5, 8])
def test_the_mean_over_cells_equals_jnp_mean_to_the_bit(cells: int) -> None:
    # the read path sums the cells one after another (fast on XLA's CPU backend); the runs
    # recorded with jnp.mean must reproduce bit for bit
    layer = _cells(devices.preset("rram", (6, 4)), cells).layers[0]
    w = jax.random.normal(jax.random.key(cells), synapse_shape(layer)) * 3.0
    got = jax.jit(lambda a: mean_over_cells(a, layer))(w)
    assert got.shape == (7, 4)
    assert np.array_equal(np.asarray(got), np.asarray(jax.jit(lambda a: jnp.mean(a, 0))(w)))
