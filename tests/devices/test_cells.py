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


def _overflow_device(key: jax.Array, overflow: int) -> devices.Device:
    # constant steps of 1/8, at most 5 pulses a write, 4 cells
    syn = SynapseSpec(w_min=-8.0, w_max=8.0, dw_min=0.125, update_model="constant_step",
                      max_pulses=5, cells=4, overflow_cells=overflow)
    return devices.fabricate(DeviceSpec((6, 5, 3), synapse=syn), key)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_overflow_cells_take_what_the_pulse_clip_cut(key: jax.Array, sign: float) -> None:
    # a request of 3/8 asks 4 x 3 = 12 pulses of one cell: the clip lets 5 through; with
    # overflow the next cells take 5 and then 2, so the synapse's mean moves as asked
    for overflow, pulses in [(0, [5]), (1, [5, 5]), (2, [5, 5, 2]), (3, [5, 5, 2])]:
        d = _overflow_device(key, overflow)
        cells_seen = set()
        for i in range(6):
            new = devices.program(d, _requests(d, sign * 3 / 8), key=jax.random.key(i))
            for w0, w1 in zip(d.state.weights, new.state.weights, strict=True):
                moves = np.asarray(w1 - w0) / (sign * 0.125)  # pulses per cell and synapse
                per_cell = [c for c in range(4) if np.any(moves[c] != 0)]
                got = sorted((round(float(moves[c].max())) for c in per_cell), reverse=True)
                assert got == pulses, (overflow, got)
                for c in per_cell:  # every synapse of a written cell took the same count
                    np.testing.assert_allclose(moves[c], moves[c].max(), atol=1e-4)
                cells_seen.update(per_cell)
        assert cells_seen == {0, 1, 2, 3}  # the cells are drawn anew at each call


def test_overflow_cells_leave_a_request_within_the_clip_to_one_cell(key: jax.Array) -> None:
    d2 = _overflow_device(key, 2)
    new = devices.program(d2, _requests(d2, 3 / 32), key=jax.random.key(3))  # 3 pulses
    for w0, w1 in zip(d2.state.weights, new.state.weights, strict=True):
        moved = [c for c in range(4) if not np.array_equal(w0[c], w1[c])]
        assert len(moved) == 1
        np.testing.assert_allclose(np.asarray(w1.mean(0) - w0.mean(0)), 3 / 32, atol=1e-6)


def test_overflow_cells_add_no_write_noise_to_untouched_cells(key: jax.Array) -> None:
    # rram with write noise: a small request to 8 cells with 7 overflow cells rewrites (and so
    # redraws the read offset of) only the synapses whose pulses reached a cell
    spec = devices.preset("rram", (20, 10)).replace_in_layers("synapse", cells=8,
                                                              overflow_cells=7)
    d = devices.fabricate(spec, key)
    req = (jnp.full((21, 10), 0.0).at[:3].set(0.05),)  # 0.05 x 8 / 0.002 = 200 pulses
    new = devices.program(d, req, key=jax.random.key(1))
    s0, s1 = np.asarray(d.state.synapses[0]), np.asarray(new.state.synapses[0])
    changed = np.any(s0 != s1, axis=0)  # per synapse: any cell rewritten
    assert changed[:3].all() and not changed[3:].any()
    cells_written = np.sum(s0 != s1, axis=0)[:3]  # per synapse: cells rewritten
    assert (cells_written == 7).all()  # ceil(200 / 31): 7 cells took the pulses, 1 was left


@pytest.mark.parametrize("bad, match", [
    ({"overflow_cells": -1}, "integer >= 0"),
    ({"overflow_cells": 4}, "below cells"),
    ({"overflow_cells": 1, "update_model": "ideal"}, "pulsed update_model"),
])
def test_overflow_cells_are_checked(bad: dict, match: str) -> None:
    base = {"cells": 4, "update_model": "constant_step"}
    with pytest.raises(SpecError, match=rf"synapse\.overflow_cells.*{match}"):
        DeviceSpec((4, 3), synapse=SynapseSpec(**{**base, **bad}))
