"""The read path: ideal exactness, converters, noise, transfer curves, batching, compilation."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import devices
from devices import ConnectivitySpec, DeviceSpec, NeuronSpec, ReadSpec

from ..conftest import TINY


def _set_weights(device: devices.Device, weights: list[jax.Array]) -> devices.Device:
    state = device.state.with_weights([jnp.asarray(w) for w in weights])
    return dataclasses.replace(device, state=state)


@jax.jit
def _hand_written_ff(weights: list[np.ndarray], x: np.ndarray) -> list[jax.Array]:
    """Hinton's digital FF forward pass: RMS-normalise, dense ReLU layers with biases (compiled
    as one program, like ``measure``, so both see the same XLA fusion)."""

    def rms_norm(a: jax.Array) -> jax.Array:
        return a / (jnp.sqrt(jnp.mean(a * a, axis=1, keepdims=True)) + 1e-10)

    h, outs = rms_norm(jnp.asarray(x)), []
    for w in weights:
        y = jax.nn.relu(h @ w[:-1] + w[-1])
        outs.append(y)
        h = rms_norm(y)
    return outs


def test_ideal_measure_equals_hand_written_relu_network_exactly() -> None:
    spec = devices.preset("ideal", (20, 16, 12, 10))
    d = devices.fabricate(spec, jax.random.key(0))
    # give the biases values too, so the bias line is exercised
    w = [np.asarray(a).copy() for a in d.state.weights]
    for a in w:
        a[-1] = np.linspace(-0.5, 0.5, a.shape[1])
    d = _set_weights(d, w)
    x = np.asarray(jax.random.uniform(jax.random.key(1), (7, 20)))
    got = devices.measure(d, jnp.asarray(x))
    expected = _hand_written_ff(w, x)
    for layer in range(3):
        assert np.array_equal(np.asarray(got.outputs[layer]), np.asarray(expected[layer]))
    # measured inputs are the normalised activities below, plus the bias line at 1 (normalised
    # here outside measure's compiled program, whose fusion may round the division differently)
    np.testing.assert_allclose(np.asarray(got.inputs[1][:, :-1]),
                               np.asarray(devices.normalize(expected[0])), rtol=1e-6, atol=0)
    assert np.all(np.asarray(got.inputs[2][:, -1]) == 1.0)


def test_adc_output_takes_at_most_2_pow_bits_values() -> None:
    for bits, family in ((3, "relu"), (4, "tanh_sat")):
        spec = DeviceSpec((30, 400), neuron=NeuronSpec(family, saturation=2.0),
                          read=ReadSpec(out_bound=2.0, adc_bits=bits, out_noise=0.3))
        d = devices.fabricate(spec, jax.random.key(2))
        x = jax.random.normal(jax.random.key(3), (200, 30))
        y = np.asarray(devices.measure(d, x, key=jax.random.key(4)).outputs[0])
        levels = np.unique(y)
        assert len(levels) <= 2**bits
        assert len(levels) >= 2 ** (bits - 1)  # the range is actually used
        assert 0.0 in levels  # zero is a level, signed or not
        assert y.min() >= (0.0 if family == "relu" else -2.0) and y.max() <= 2.0


def test_dac_takes_at_most_2_pow_bits_minus_1_levels_and_clips() -> None:
    spec = DeviceSpec((50, 4), read=ReadSpec(input_bound=2.0, dac_bits=4), normalize_input=False)
    d = devices.fabricate(spec, jax.random.key(5))
    x = jax.random.normal(jax.random.key(6), (100, 50)) * 2
    v = np.asarray(devices.measure(d, x).inputs[0][:, :-1])  # digital units
    assert len(np.unique(v)) <= 2**4 - 1
    assert v.min() == -2.0 and v.max() == 2.0  # clipped at full scale
    assert np.allclose(v, np.clip(np.asarray(x), -2, 2), atol=2 / 7 / 2 + 1e-6)


def test_noise_and_bounds_scale_with_full_scale_and_gain() -> None:
    """Noise and the current bound are in full-scale units: in digital units they are multiplied
    by input_bound and gain."""
    for bound, gain in ((1.0, 1.0), (4.0, 1.0), (4.0, 0.25)):
        spec = DeviceSpec((10, 3000), neuron=NeuronSpec("tanh_sat", saturation=1e6),
                          read=ReadSpec(input_bound=bound, out_noise=0.1, out_bound=0.5,
                                        gain=gain),
                          connectivity=ConnectivitySpec(bias=False))
        d = devices.fabricate(spec, jax.random.key(0))
        zero = _set_weights(d, [jnp.zeros_like(d.state.weights[0])])
        x = jnp.full((20, 10), 0.5)
        y = np.asarray(devices.measure(zero, x, key=jax.random.key(1)).outputs[0])
        assert abs(y.std() - 0.1 * bound * gain) < 0.03 * 0.1 * bound * gain
        big = _set_weights(d, [jnp.full_like(d.state.weights[0], 100.0)])
        y = np.asarray(devices.measure(big, x, key=jax.random.key(1)).outputs[0])
        np.testing.assert_allclose(y, 0.5 * bound * gain, rtol=1e-5)


def test_gain_maps_digital_weights_onto_conductances() -> None:
    base = devices.preset("ideal", (30, 20, 10))
    scaled = base.replace(read=ReadSpec(gain=0.25))
    d1 = devices.fabricate(base, jax.random.key(3))
    d2 = devices.fabricate(scaled, jax.random.key(3))
    # the same digital function from 4x larger conductances, at fab and after any change
    np.testing.assert_allclose(d2.state.weights[0], 4 * d1.state.weights[0], rtol=1e-6)
    x = jax.random.uniform(jax.random.key(4), (5, 30))
    for a, b in zip(devices.measure(d1, x).outputs, devices.measure(d2, x).outputs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_unvmapped_population_is_a_clear_error(x_batch: jax.Array) -> None:
    pop = devices.spawn(devices.preset("ideal", TINY), 2, jax.random.key(0))
    with pytest.raises(ValueError, match="vmap measure"):
        devices.measure(pop, x_batch)
    with pytest.raises(ValueError, match="vmap program"):
        devices.program(pop, tuple(w[0] for w in pop.state.weights), key=jax.random.key(0))


def test_unclipped_noiseless_converter_path_equals_the_ideal_path() -> None:
    """The periphery rescales the analog result by the DAC's full scale, so a DAC that neither
    clips nor quantises changes nothing: learning speed does not depend on the full scale."""
    ideal = devices.preset("ideal", (20, 16, 12))
    wide = ideal.replace(read=ReadSpec(input_bound=1e4))
    d = devices.fabricate(ideal, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (6, 20))
    a = devices.measure(d, x)
    b = devices.measure(dataclasses.replace(d, spec=wide), x)
    for ya, yb in zip(a.outputs, b.outputs, strict=True):
        np.testing.assert_allclose(ya, yb, rtol=1e-6, atol=1e-7)


def test_output_noise_variance_matches_recipe() -> None:
    sigma = 0.3
    spec = DeviceSpec((10, 2000), neuron=NeuronSpec("tanh_sat", saturation=1e6),
                      read=ReadSpec(out_noise=sigma), connectivity=ConnectivitySpec(bias=False))
    d = devices.fabricate(spec, jax.random.key(7))
    x = jax.random.uniform(jax.random.key(8), (4, 10))
    clean = np.asarray(devices.measure(dataclasses.replace(d, spec=spec.replace(
        read=ReadSpec())), x).outputs[0])
    noisy = np.stack([np.asarray(devices.measure(d, x, key=jax.random.key(k)).outputs[0])
                      for k in range(10)])
    residual = noisy - clean  # tanh with huge rails is linear: gain 1 around 0
    assert abs(residual.std() - sigma) < 0.02 * sigma
    assert abs(residual.mean()) < 0.01
    # c2c: a new key gives a new draw, the same key the same draw
    a = devices.measure(d, x, key=jax.random.key(1)).outputs[0]
    b = devices.measure(d, x, key=jax.random.key(1)).outputs[0]
    c = devices.measure(d, x, key=jax.random.key(2)).outputs[0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_noisy_device_demands_a_key(x_batch: jax.Array) -> None:
    d = devices.fabricate(devices.preset("rram", TINY), jax.random.key(0))
    with pytest.raises(ValueError, match="pass key="):
        devices.measure(d, x_batch)
    with pytest.raises(ValueError, match=r"shape \(batch, 12\)"):
        devices.measure(d, x_batch[:, :5], key=jax.random.key(0))


@pytest.mark.parametrize("family", ["relu", "softplus", "square_law", "tanh_sat", "exp",
                                    "tabulated"])
def test_every_varied_curve_is_increasing(family: str) -> None:
    table = ((-1.0, 0.0, 0.5, 2.0), (0.0, 0.0, 0.4, 3.0)) if family == "tabulated" else None
    neuron = NeuronSpec(family, saturation=3.0, gain_sigma=0.5, threshold_sigma=0.5,
                        sharpness_sigma=0.5, saturation_sigma=0.5, table=table)
    d = devices.fabricate(DeviceSpec((3, 500), neuron=neuron), jax.random.key(9))
    i = jnp.linspace(-4, 6, 400)
    curves = np.asarray(devices.transfer_curves(d, 0, i))
    assert curves.shape == (500, 400)
    assert np.all(np.isfinite(curves))
    assert np.all(np.diff(curves, axis=1) >= -1e-6)  # non-decreasing everywhere
    assert np.all(curves[:, -1] > curves[:, 0])  # and really increasing
    nominal = np.asarray(devices.nominal_curve(d.spec, 0, i))
    assert np.all(np.diff(nominal) >= -1e-6)


def test_curve_families_follow_their_equations() -> None:
    i = jnp.linspace(-2, 3, 11)
    cases = {
        "relu": np.maximum(np.asarray(i) - 0.5, 0) * 2,
        "softplus": 2 * np.log1p(np.exp(3 * (np.asarray(i) - 0.5))) / 3,
        "square_law": 2 * 3 * np.maximum(np.asarray(i) - 0.5, 0) ** 2,
        "exp": 2 * np.exp(3 * (np.asarray(i) - 0.5)) / 3,
    }
    for family, expected in cases.items():
        spec = DeviceSpec((2, 1), neuron=NeuronSpec(family, gain=2.0, threshold=0.5,
                                                    sharpness=3.0, saturation=5.0))
        got = np.asarray(devices.nominal_curve(spec, 0, i))
        assert np.allclose(got, np.minimum(expected, 5.0), rtol=1e-5, atol=1e-6), family
    spec = DeviceSpec((2, 1), neuron=NeuronSpec("tanh_sat", gain=2.0, saturation=1.5))
    assert np.allclose(devices.nominal_curve(spec, 0, i), 1.5 * np.tanh(2 * np.asarray(i) / 1.5),
                       atol=1e-6)
    table = ((0.0, 1.0, 2.0), (0.0, 1.0, 4.0))
    spec = DeviceSpec((2, 1), neuron=NeuronSpec("tabulated", table=table))
    assert np.allclose(devices.nominal_curve(spec, 0, jnp.array([-1.0, 0.5, 1.5, 9.0])),
                       [0.0, 0.5, 2.5, 4.0])


def test_vmap_measure_over_population_equals_a_loop(x_batch: jax.Array, key: jax.Array) -> None:
    spec = devices.preset("harsh", TINY)
    pop = devices.spawn(spec, 4, key)
    keys = jax.random.split(jax.random.key(11), 4)
    batched = jax.vmap(lambda d, k: devices.measure(d, x_batch, key=k))(pop, keys)
    for i in range(4):
        single = devices.measure(pop[i], x_batch, key=keys[i])
        for layer in range(spec.n_layers):
            np.testing.assert_allclose(batched.outputs[layer][i], single.outputs[layer],
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(batched.inputs[layer][i], single.inputs[layer],
                                       rtol=1e-6, atol=1e-6)


def test_second_call_does_not_recompile(x_batch: jax.Array) -> None:
    from devices import _read, _write

    spec = devices.preset("rram", (12, 7, 5))  # a shape no other test uses
    d = devices.fabricate(spec, jax.random.key(0))
    before = _read._measure._cache_size()
    devices.measure(d, x_batch, key=jax.random.key(1))
    devices.measure(d, x_batch + 1, key=jax.random.key(2))
    assert _read._measure._cache_size() == before + 1
    req = tuple(jnp.zeros_like(w) for w in d.state.weights)
    before = _write._program._cache_size()
    d2 = devices.program(d, req, key=jax.random.key(3))
    devices.program(d2, req, key=jax.random.key(4))
    assert _write._program._cache_size() == before + 1


def test_mortal_device_neurons_die_flat_or_noisy() -> None:
    from devices import AgingSpec

    spec = DeviceSpec((10, 3000), aging=AgingSpec(lifetime=100.0, lifetime_sigma=0.5,
                                                  fail_noisy_fraction=0.3, fail_noise=2.0))
    d = devices.fabricate(spec, jax.random.key(12))
    info = devices.inspect(d)["layers"][0]
    x = jax.random.uniform(jax.random.key(13), (50, 10))
    young = np.asarray(devices.measure(d, x, key=jax.random.key(1)).outputs[0])
    old = devices.age(d, 100.0)
    y = np.asarray(devices.measure(old, x, key=jax.random.key(1)).outputs[0])
    dead = np.asarray(info["fail_time"]) <= 100.0
    noisy = np.asarray(info["fail_noisy"])
    assert abs(dead.mean() - 0.5) < 0.05  # median lifetime 100 s
    assert np.array_equal(y[:, ~dead], young[:, ~dead])
    assert np.all(y[:, dead & ~noisy] == 0)
    garbage = y[:, dead & noisy]
    assert abs(np.sqrt(np.mean(garbage**2)) - 2.0) < 0.1  # |N(0, 2²)|
    assert devices.age(d, 1e9).state.age == pytest.approx(1e9)
    assert math.isinf(float(devices.inspect(devices.fabricate(
        devices.preset("ideal", TINY), jax.random.key(0)))["layers"][0]["fail_time"][0]))


def _bf16(a: jax.Array) -> np.ndarray:
    return np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_bfloat16_matmul_rounds_both_operands_and_accumulates_in_float32() -> None:
    a = jax.random.normal(jax.random.key(0), (9, 300))
    b = jax.random.normal(jax.random.key(1), (300, 7))
    got = np.asarray(devices.matmul(a, b, "bfloat16"))
    assert got.dtype == np.float32
    exact = _bf16(a) @ _bf16(b)  # the product of the rounded operands, in float64
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-4 * np.abs(exact).max())
    plain = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    assert np.abs(got - plain).max() > 100 * np.abs(got - exact).max()  # rounding happened
    assert np.array_equal(np.asarray(devices.matmul(a, b, "float32")), np.asarray(a @ b))
    with pytest.raises(ValueError, match="bfloat16"):
        devices.matmul(a, b, "float16")


def test_bfloat16_product_on_cpu_is_the_native_product_in_float32_arithmetic() -> None:
    """On CPUs the bfloat16 product is computed from the rounded operands widened to float32
    (XLA's CPU runtime lacks a bfloat16 kernel for products it does not fuse); it equals the
    backend's own bfloat16 product up to the order of the float32 sums, and it is what
    ``matmul`` returns here."""
    from devices import _matmul

    a = jax.random.normal(jax.random.key(2), (2, 33, 75))
    b = jax.random.normal(jax.random.key(3), (75, 16))
    native = np.asarray(jax.jit(_matmul._bfloat16_native)(a, b))
    widened = np.asarray(jax.jit(_matmul._bfloat16_as_float32)(a, b))
    np.testing.assert_allclose(widened, native, rtol=0, atol=1e-5 * np.abs(native).max())
    assert np.array_equal(np.asarray(jax.jit(devices.matmul, static_argnums=2)(a, b,
                                                                              "bfloat16")),
                          widened)
    assert np.abs(widened - np.asarray(a @ b)).max() > 1e-3  # rounded, not a float32 product


def test_bfloat16_crossbar_measures_the_rounded_product_and_nothing_else() -> None:
    spec = devices.preset("ideal", (20, 16, 12))
    d32 = devices.fabricate(spec, jax.random.key(0))
    d16 = devices.fabricate(spec.replace(matmul_dtype="bfloat16"), jax.random.key(0))
    # the fab draws do not depend on the simulator's precision
    for w32, w16 in zip(d32.state.weights, d16.state.weights, strict=True):
        assert np.array_equal(np.asarray(w32), np.asarray(w16))
    x = jax.random.uniform(jax.random.key(1), (7, 20))
    m16 = devices.measure(d16, x)
    # layer by layer: ReLU(bf16(v) · bf16(W) + b) from the measured input v of the same layer
    for v, y, w in zip(m16.inputs, m16.outputs, d16.state.weights, strict=True):
        expected = np.maximum(_bf16(v[:, :-1]) @ _bf16(w[:-1]) + np.asarray(w[-1]), 0.0)
        np.testing.assert_allclose(np.asarray(y), expected, rtol=0, atol=1e-5)
    m32 = devices.measure(d32, x)
    diff = [float(jnp.abs(a - b).max()) for a, b in zip(m32.outputs, m16.outputs, strict=True)]
    assert 0 < max(diff) < 0.05  # close to float32, but rounded
    again = devices.measure(d16, x)
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(m16.outputs, again.outputs, strict=True))


@pytest.mark.parametrize("cells", [1, 3])
def test_the_bias_line_is_the_last_row_of_the_read_weights_to_the_bit(preset_name: str,
                                                                       cells: int) -> None:
    from devices._device import mean_over_cells
    from devices._read import bias_line, effective_weights

    spec = devices.preset(preset_name, TINY).replace_in_layers(
        "synapse", cells=cells, read_gain_sigma=0.1)
    d = devices.fabricate(spec, jax.random.key(7))
    rows = jax.jit(lambda s, p, age: bias_line(s, p, spec.layers[0], age))
    full = mean_over_cells(effective_weights(d.state.synapses[0], d.physics[0]), spec.layers[0])
    assert d.physics[0].read_gain is not None
    for age in (0.0, 3e7, math.nan):  # NaN: two trips of the loop, the same row
        got = rows(d.state.synapses[0], d.physics[0], jnp.float32(age))
        assert got.shape == (TINY[1],) and got.dtype == jnp.float32
        assert np.array_equal(np.asarray(got), np.asarray(full[-1]))
