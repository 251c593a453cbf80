"""Fabrication: statistics match the recipe, determinism, independence, populations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import devices
from devices import ConnectivitySpec, DeviceSpec, NeuronSpec, SynapseSpec

from ..conftest import TINY


def _leaves_equal(a: devices.Device, b: devices.Device) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb, strict=True))


def test_neuron_variation_matches_recipe() -> None:
    spec = DeviceSpec((4, 10_000), neuron=NeuronSpec(
        "softplus", gain=2.0, threshold=0.3, sharpness=3.0, saturation=5.0, gain_sigma=0.2,
        threshold_sigma=0.1, sharpness_sigma=0.15, saturation_sigma=0.25))
    info = devices.inspect(devices.fabricate(spec, jax.random.key(1)))["layers"][0]
    log_gain = np.log(np.asarray(info["gain"]))
    # σ is the std of log(gain) of a normal truncated at ±3σ (std factor 0.987)
    assert abs(log_gain.std() - 0.2) < 0.05 * 0.2
    assert abs(log_gain.mean() - np.log(2.0)) < 0.01
    assert abs(np.asarray(info["threshold"]).std() - 0.1) < 0.005
    assert abs(np.asarray(info["threshold"]).mean() - 0.3) < 0.005
    assert abs(np.log(np.asarray(info["sharpness"])).std() - 0.15) < 0.05 * 0.15
    assert abs(np.log(np.asarray(info["saturation"])).std() - 0.25) < 0.05 * 0.25
    assert np.all(np.abs(log_gain - np.log(2.0)) <= 3 * 0.2 + 1e-6)  # truncated at 3σ


def test_synapse_variation_and_fault_rates_match_recipe() -> None:
    spec = DeviceSpec((200, 300), synapse=SynapseSpec(
        w_min=-0.8, w_max=1.2, bound_sigma=0.1, read_gain_sigma=0.05, dw_min=0.002,
        dw_min_sigma=0.3, up_down=0.1, up_down_sigma=0.02, update_model="soft_bounds",
        stuck_zero_rate=0.03, stuck_bound_rate=0.02),
        connectivity=ConnectivitySpec(density=0.7))
    info = devices.inspect(devices.fabricate(spec, jax.random.key(2)))["layers"][0]
    mask = np.asarray(info["mask"])[:-1]
    assert abs(mask.mean() - 0.7) < 0.01
    assert np.asarray(info["mask"])[-1].all()  # the bias line is wired
    wired = np.asarray(info["mask"])
    stuck = np.asarray(info["stuck"])
    assert np.all(stuck[~wired] == 0)  # fault rates are per existing synapse
    assert abs((stuck[wired] == 1).mean() - 0.03) < 0.005
    assert abs(np.isin(stuck[wired], (2, 3)).mean() - 0.02) < 0.005
    assert abs(np.log(np.asarray(info["w_max"]) / 1.2).std() - 0.1) < 0.005
    assert abs(np.log(np.asarray(info["w_min"]) / -0.8).std() - 0.1) < 0.005
    assert abs(np.log(np.asarray(info["read_gain"])).std() - 0.05) < 0.0025
    dw = (np.asarray(info["dw_up"]) + np.asarray(info["dw_down"])) / 2
    assert abs(np.log(dw / 0.002).std() - 0.3) < 0.015
    ratio = np.asarray(info["dw_up"]) / np.asarray(info["dw_down"])
    asym = (ratio - 1) / (ratio + 1)
    assert abs(asym.mean() - 0.1) < 0.002 and abs(asym.std() - 0.02) < 0.002


def test_initial_weights_follow_hinton_recipe_and_respect_physics() -> None:
    spec = DeviceSpec((400, 500), connectivity=ConnectivitySpec(density=0.5),
                      synapse=SynapseSpec(w_min=-0.05, w_max=0.05, stuck_bound_rate=0.01))
    d = devices.fabricate(spec, jax.random.key(3))
    info = devices.inspect(d)["layers"][0]
    w, mask = np.asarray(info["weights"]), np.asarray(info["mask"])
    stuck = np.asarray(info["stuck"])
    assert np.all(w[~mask] == 0)
    assert np.all(w[-1][stuck[-1] == 0] == 0)  # bias weights start at 0
    assert np.all(w <= np.asarray(info["w_max"])) and np.all(w >= np.asarray(info["w_min"]))
    assert np.allclose(w[stuck == 2], np.asarray(info["w_max"])[stuck == 2])
    free = w[:-1][mask[:-1] & (stuck[:-1] == 0) & (np.abs(w[:-1]) < 0.04)]
    assert free.size > 1000
    unbounded = DeviceSpec((400, 500))
    w0 = np.asarray(devices.fabricate(unbounded, jax.random.key(3)).state.weights[0])[:-1]
    assert abs(w0.std() - 1 / np.sqrt(400)) < 0.02 / np.sqrt(400)


def test_receptive_fields_are_square_windows_plus_global_lines() -> None:
    spec = DeviceSpec((36, 50), connectivity=ConnectivitySpec(
        receptive_field=3, image_shape=(6, 6), global_inputs=2))
    mask = np.asarray(devices.inspect(devices.fabricate(spec, jax.random.key(4)))
                      ["layers"][0]["mask"])[:-1]
    assert mask[:2].all()
    for j in range(50):
        window = mask[:, j].reshape(6, 6).copy()
        window.flat[:2] = False
        rows, cols = np.nonzero(window)
        pixels = set(zip(rows.tolist(), cols.tolist(), strict=True))
        r0, c0 = rows.min(), cols.min()
        full = {(r, c) for r in range(r0, r0 + 3) for c in range(c0, c0 + 3)}
        assert pixels == full - {(0, 0), (0, 1)}
    assert len({tuple(np.nonzero(mask[2:, j])[0]) for j in range(50)}) > 5  # windows differ


def test_same_key_gives_bit_identical_device(preset_name: str) -> None:
    spec = devices.preset(preset_name, TINY)
    assert _leaves_equal(devices.fabricate(spec, jax.random.key(7)),
                         devices.fabricate(spec, jax.random.key(7)))


def test_different_keys_give_independent_devices() -> None:
    spec = devices.preset("harsh", (100, 200))
    a = devices.inspect(devices.fabricate(spec, jax.random.key(1)))["layers"][0]
    b = devices.inspect(devices.fabricate(spec, jax.random.key(2)))["layers"][0]
    for name in ("gain", "threshold", "dw_up", "w_max", "read_gain"):
        x, y = np.asarray(a[name]).ravel(), np.asarray(b[name]).ravel()
        assert not np.array_equal(x, y)
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.1, name
    assert (np.asarray(a["mask"]) != np.asarray(b["mask"])).mean() > 0.3


def test_spawn_member_equals_fabricate_with_its_key(key: jax.Array) -> None:
    spec = devices.preset("rram", TINY)
    pop = devices.spawn(spec, 5, key)
    assert pop.population_size == 5
    keys = devices.device_keys(key, 5)
    for i in (0, 3):
        assert _leaves_equal(pop[i], devices.fabricate(spec, keys[i]))
    assert not _leaves_equal(pop[0], pop[1])


def test_index_slice_and_stack_populations(key: jax.Array) -> None:
    spec = devices.preset("pcm", TINY)
    pop = devices.spawn(spec, 6, key)
    assert pop[1:4].population_size == 3
    assert _leaves_equal(pop[1:4][1], pop[2])
    restacked = devices.stack([pop[i] for i in range(6)])
    assert _leaves_equal(restacked, pop)
    assert _leaves_equal(devices.stack([pop[:2], pop[2:]]), pop)
    with pytest.raises(TypeError, match="single device"):
        pop[0][0]
    with pytest.raises(ValueError, match="one recipe"):
        devices.stack([pop[0], devices.fabricate(devices.preset("rram", TINY), key)])
    with pytest.raises(ValueError, match="positive integer"):
        devices.spawn(spec, 0, key)


def test_ideal_device_stores_nothing_but_weights(key: jax.Array) -> None:
    d = devices.fabricate(devices.preset("ideal", TINY), key)
    leaves = jax.tree.leaves(d.physics)
    synapse_sized = [a for a in leaves if a.ndim == 2]
    assert synapse_sized == []
    assert all(o is None for o in d.state.offsets)


def test_a_write_noisy_device_holds_conductance_and_offset_in_one_array(key: jax.Array
                                                                       ) -> None:
    d = devices.fabricate(devices.preset("rram", TINY), key)
    stored, w, off = d.state.synapses[0], d.state.weights[0], d.state.offsets[0]
    assert stored.dtype == jnp.complex64 and w.dtype == off.dtype == jnp.float32
    np.testing.assert_array_equal(np.real(stored), w)
    np.testing.assert_array_equal(np.imag(stored), off)
    assert np.std(np.asarray(off)) > 0  # the fab write left offsets
    # the checkpoint layout and back, and new conductances that keep the offsets
    again = d.state.unpacked().packed()
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again),
                                                    jax.tree.leaves(d.state), strict=True))
    moved = d.state.with_weights([w + 1.0 for w in d.state.weights])
    np.testing.assert_array_equal(moved.offsets[0], off)
    np.testing.assert_array_equal(moved.weights[0], w + 1.0)
    ideal = devices.fabricate(devices.preset("ideal", TINY), key)
    assert ideal.state.synapses[0].dtype == jnp.float32 and ideal.state.offsets == (None, None)


def test_fabricate_is_jit_compatible_under_vmap(key: jax.Array) -> None:
    spec = devices.preset("ecram", TINY)
    keys = jax.random.split(key, 3)
    pop = jax.jit(jax.vmap(lambda k: devices.fabricate(spec, k)))(keys)
    assert pop.state.weights[0].shape == (3, TINY[0] + 1, TINY[1])
    assert jnp.all(jnp.isfinite(pop.state.weights[1]))
