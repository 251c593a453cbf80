"""The write path: pulse counts, closed-form update models, noise, stuck and absent synapses."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import devices
from devices import AgingSpec, ConnectivitySpec, DeviceSpec, SynapseSpec, _noise
from devices._device import steps
from devices._write import _integer_power, apply_pulses, pulse_counts

from ..conftest import TINY


def _one_layer(synapse: SynapseSpec, n_in: int = 99, n_out: int = 100, **kw) -> DeviceSpec:
    return DeviceSpec((n_in, n_out), synapse=synapse, **kw)


def _with_weights(d: devices.Device, w: jax.Array) -> devices.Device:
    return dataclasses.replace(d, state=d.state.with_weights((w,)))


def test_ideal_update_applies_the_float_request_exactly(key: jax.Array) -> None:
    d = devices.fabricate(devices.preset("ideal", TINY), key)
    req = tuple(jax.random.normal(jax.random.key(i), w.shape) * 1e-3
                for i, w in enumerate(d.state.weights))
    new = devices.program(d, req, key=jax.random.key(9))
    for w0, r, w1 in zip(d.state.weights, req, new.state.weights, strict=True):
        assert np.array_equal(np.asarray(w1), np.asarray(w0 + r))


def test_pulse_counts_are_unbiased_stochastic_roundings_and_clipped() -> None:
    layer = _one_layer(SynapseSpec(dw_min=0.01, max_pulses=5)).layer(0)
    req = jnp.full((400, 500), 0.0237)  # 2.37 pulses
    n = np.asarray(pulse_counts(req, layer, _noise.uniform(jax.random.key(0), req.shape)))
    assert set(np.unique(n)) == {2.0, 3.0}
    assert abs(n.mean() - 2.37) < 0.01
    big = np.asarray(pulse_counts(jnp.array([1.0, -1.0, 0.0]), layer,
                                 _noise.uniform(jax.random.key(1), (3,))))
    assert big.tolist() == [5.0, -5.0, 0.0]


def test_integer_power_by_squaring_equals_the_power_for_every_allowed_count() -> None:
    base = np.linspace(0.5, 0.9999, 64, dtype=np.float32)[:, None]
    counts = np.arange(32, dtype=np.float32)[None, :]
    got = np.asarray(_integer_power(jnp.asarray(base), jnp.asarray(counts), 31))
    np.testing.assert_allclose(got, base.astype(np.float64) ** counts, rtol=2e-6)
    assert np.all(got[:, 0] == 1.0) and np.array_equal(got[:, 1], base[:, 0])


def test_soft_bounds_n_up_pulses_match_closed_form_in_expectation() -> None:
    b, dw, n, w0 = 1.0, 0.02, 20, 0.1
    spec = _one_layer(SynapseSpec(w_min=-1.0, w_max=b, dw_min=dw, update_model="soft_bounds",
                                  step_noise=0.5, max_pulses=31))
    layer = spec.layer(0)
    d = devices.fabricate(spec, jax.random.key(0))
    w = jnp.full((100, 100), w0)
    counts = jnp.full((100, 100), float(n))
    got = np.asarray(apply_pulses(w, counts, layer, d.physics[0],
                                 _noise.normal(jax.random.key(1), w.shape)))
    expected = b - (b - w0) * (1 - dw / b) ** n
    assert abs(got.mean() - expected) < 0.005 * (expected - w0)
    assert got.std() > 0.01 * (expected - w0)  # the step noise is there
    # the same through the full request path (requests of exactly n nominal steps)
    d = _with_weights(d, w)
    out = devices.program(d, (jnp.full((100, 100), n * dw),), key=jax.random.key(2))
    assert abs(np.asarray(out.state.weights[0]).mean() - expected) < 0.005 * (expected - w0)
    # and down: w ← a + (w − a)(1 − dw/|a|)^n
    down = np.asarray(apply_pulses(w, -counts, layer, d.physics[0],
                                  _noise.normal(jax.random.key(3), w.shape)))
    expected_down = -1.0 + (w0 + 1.0) * (1 - dw / 1.0) ** n
    assert abs(down.mean() - expected_down) < 0.005 * abs(expected_down - w0)


def test_soft_bounds_approach_but_never_pass_the_bound() -> None:
    spec = _one_layer(SynapseSpec(w_min=-0.5, w_max=0.8, dw_min=0.05,
                                  update_model="soft_bounds", bound_sigma=0.2))
    d = devices.fabricate(spec, jax.random.key(0))
    req = (jnp.full((100, 100), 10.0),)
    for i in range(30):
        d = devices.program(d, req, key=jax.random.key(i))
    info = devices.inspect(d)["layers"][0]
    w, hi = np.asarray(info["weights"]), np.asarray(info["w_max"])
    assert np.all(w <= hi) and np.all(w > 0.95 * hi)


def test_constant_step_moves_n_steps_with_asymmetry() -> None:
    spec = _one_layer(SynapseSpec(dw_min=0.01, up_down=0.2, update_model="constant_step",
                                  dw_min_sigma=0.1, up_down_sigma=0.05))
    d = devices.fabricate(spec, jax.random.key(0))
    up_steps, down_steps = (np.asarray(s) for s in steps(d.physics[0], spec.layer(0)))
    w0 = np.asarray(d.state.weights[0])
    up = devices.program(d, (jnp.full(w0.shape, 0.03),), key=jax.random.key(1))
    assert np.allclose(np.asarray(up.state.weights[0]) - w0, 3 * up_steps, atol=1e-6)
    down = devices.program(d, (jnp.full(w0.shape, -0.03),), key=jax.random.key(1))
    assert np.allclose(w0 - np.asarray(down.state.weights[0]), 3 * down_steps, atol=1e-6)
    assert abs(np.mean(up_steps / down_steps) - 1.2 / 0.8) < 0.02


@pytest.mark.parametrize("model", ["ideal", "constant_step", "soft_bounds"])
def test_stuck_and_absent_synapses_never_move(model: str) -> None:
    spec = _one_layer(SynapseSpec(update_model=model, dw_min=0.01, stuck_zero_rate=0.1,
                                  stuck_bound_rate=0.1, step_noise=1.0, write_noise=2.0),
                      connectivity=ConnectivitySpec(density=0.6))
    d = devices.fabricate(spec, jax.random.key(0))
    info = devices.inspect(d)["layers"][0]
    frozen = (np.asarray(info["stuck"]) != 0) | ~np.asarray(info["mask"])
    start = np.asarray(d.state.weights[0])
    for i in range(10):  # wild requests of every sign and size
        req = jax.random.normal(jax.random.key(100 + i), start.shape) * 10.0 ** (i % 4 - 2)
        d = devices.program(d, (req,), key=jax.random.key(i))
        now = devices.inspect(d)["layers"][0]
        assert np.array_equal(np.asarray(now["weights"])[frozen], start[frozen])
        # absent synapses carry nothing, not even write noise
        assert np.all(np.asarray(now["effective_weights"])[~np.asarray(info["mask"])] == 0)
    moved = np.asarray(d.state.weights[0]) != start
    assert moved[~frozen].mean() > 0.5


def test_drift_spares_stuck_and_absent_synapses() -> None:
    """Aging drifts every working synapse and no stuck one (a synapse stuck at a bound stays at
    the bound, which drift alone would shrink) or absent one (it stays 0)."""
    spec = _one_layer(SynapseSpec(dw_min=0.01, stuck_zero_rate=0.1, stuck_bound_rate=0.2),
                      connectivity=ConnectivitySpec(density=0.6),
                      aging=AgingSpec(drift_nu=0.08, drift_nu_sigma=0.02))
    d = devices.fabricate(spec, jax.random.key(4))
    info = devices.inspect(d)["layers"][0]
    stuck, absent = np.asarray(info["stuck"]) != 0, ~np.asarray(info["mask"])
    start = np.asarray(d.state.weights[0])
    at_bound = stuck & (start != 0)
    assert at_bound.sum() > 100 and absent.sum() > 100
    later = np.asarray(devices.age(d, 1e4).state.weights[0])
    np.testing.assert_array_equal(later[stuck], start[stuck])
    assert np.all(later[absent] == 0)
    working = ~stuck & ~absent & (start != 0)
    assert np.all(np.abs(later[working]) < np.abs(start[working]))  # drift toward 0 (ν > 0)


def test_write_noise_offset_is_redrawn_only_where_written() -> None:
    spec = _one_layer(SynapseSpec(dw_min=0.01, write_noise=3.0), n_in=199, n_out=200)
    d = devices.fabricate(spec, jax.random.key(0))
    off0 = np.asarray(d.state.offsets[0])
    assert abs(off0.std() - 0.03) < 0.002  # 3 × dw_min at fab (initial write)
    req = np.zeros((200, 200), np.float32)
    req[:100] = 0.05
    d2 = devices.program(d, (jnp.asarray(req),), key=jax.random.key(1))
    off1 = np.asarray(d2.state.offsets[0])
    assert np.array_equal(off1[100:], off0[100:])
    assert not np.any(off1[:100] == off0[:100])
    assert abs(off1[:100].std() - 0.03) < 0.002


def test_step_noise_and_write_offset_are_independent_draws() -> None:
    # one Box–Muller pair per synapse gives both: they must be independent standard normals
    dw, sigma, noise = 0.01, 0.5, 2.0
    spec = _one_layer(SynapseSpec(w_min=-10.0, w_max=10.0, dw_min=dw, step_noise=sigma,
                                  write_noise=noise), n_in=299, n_out=300)
    d = devices.fabricate(spec, jax.random.key(0))
    w0 = np.asarray(d.state.weights[0])
    d = devices.program(d, (jnp.full(w0.shape, dw),), key=jax.random.key(1))  # one pulse each
    xi_step = (np.asarray(d.state.weights[0]) - w0 - dw).ravel() / (sigma * dw)
    xi_offset = np.asarray(d.state.offsets[0]).ravel() / (noise * dw)
    limit = 5 / np.sqrt(xi_step.size)
    for z in (xi_step, xi_offset):
        assert abs(z.mean()) < limit and abs(z.std() - 1) < 0.01
    assert abs(np.corrcoef(xi_step, xi_offset)[0, 1]) < limit
    assert abs(np.corrcoef(xi_step**2, xi_offset**2)[0, 1]) < limit


def test_program_validates_request_shapes(key: jax.Array) -> None:
    d = devices.fabricate(devices.preset("rram", TINY), key)
    with pytest.raises(ValueError, match="expected 2 per-layer requests"):
        devices.program(d, (d.state.weights[0],), key=key)
    bad = (jnp.zeros((12, 8)), jnp.zeros((9, 6)))
    with pytest.raises(ValueError, match=r"layer 0 must have shape \(13, 8\)"):
        devices.program(d, bad, key=key)


def test_program_is_deterministic_for_a_key(key: jax.Array) -> None:
    d = devices.fabricate(devices.preset("harsh", TINY), key)
    req = tuple(jnp.full(w.shape, 0.01) for w in d.state.weights)
    a = devices.program(d, req, key=jax.random.key(5))
    b = devices.program(d, req, key=jax.random.key(5))
    c = devices.program(d, req, key=jax.random.key(6))
    assert all(np.array_equal(x, y) for x, y in zip(a.state.weights, b.state.weights,
                                                     strict=True))
    assert not np.array_equal(a.state.weights[0], c.state.weights[0])


def test_vmap_program_over_population_equals_a_loop(key: jax.Array) -> None:
    spec = devices.preset("pcm", TINY)
    pop = devices.spawn(spec, 3, key)
    req = tuple(jnp.full(w.shape[1:], 0.02) for w in pop.state.weights)
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.vmap(lambda d, k: devices.program(d, req, key=k))(pop, keys)
    for i in range(3):
        single = devices.program(pop[i], req, key=keys[i])
        for layer in range(2):
            np.testing.assert_allclose(batched.state.weights[layer][i],
                                       single.state.weights[layer], rtol=1e-6, atol=1e-7)


def test_drift_follows_the_power_law_per_synapse() -> None:
    spec = _one_layer(SynapseSpec(dw_min=0.01), aging=AgingSpec(drift_nu=0.08,
                                                                drift_nu_sigma=0.02))
    d = devices.fabricate(spec, jax.random.key(0))
    info = devices.inspect(d)["layers"][0]
    nu = np.asarray(info["drift_nu"])
    assert abs(nu.mean() - 0.08) < 0.002 and abs(nu.std() - 0.02) < 0.002
    w0 = np.asarray(d.state.weights[0]).astype(np.float64)
    later = devices.age(devices.age(d, 100.0), 900.0)  # two steps compose
    expected = w0 * ((1000 + 20) / 20) ** (-nu)
    np.testing.assert_allclose(np.asarray(later.state.weights[0]), expected, rtol=2e-5,
                               atol=1e-8)
    assert float(later.state.age) == 1000.0
    with pytest.raises(ValueError, match="dt must be a time >= 0"):
        devices.age(d, -1.0)
