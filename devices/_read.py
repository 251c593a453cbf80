"""The read path: DAC → crossbar (+ c2c output noise) → analog neurons → ADC → normalisation.

Values are in digital units throughout: the DAC drives ``x / input_bound`` of its full-scale
voltage and the periphery multiplies the crossbar's analog result back by ``input_bound`` (aihwkit
does the same with a per-vector scale; here it is the fixed full scale, which commutes with the
analog neurons). Noise and the current bound act on the analog result, in full-scale units.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from . import _noise
from ._curves import transfer
from ._device import Device, LayerPhysics, Measurement, mean_over_cells, split_synapses
from ._matmul import matmul
from ._spec import LayerSpec, ReadSpec

Array = jax.Array

RMS_EPS = 1e-10  # added to the RMS in the normalisation stage (as Hinton's code guards 0/0)


def normalize(a: Array) -> Array:
    """The digital normalisation stage: each row divided by its RMS, ``a / (sqrt(mean(a²)) + ε)``.

    ``a``: ``(..., n)`` float32. The mean is not subtracted (Hinton's recipe).
    """
    return a / (jnp.sqrt(jnp.mean(jnp.square(a), axis=-1, keepdims=True)) + RMS_EPS)


def full_scale(read: ReadSpec) -> float:
    """The DAC's full scale in digital units (1 for the ideal read path)."""
    return 1.0 if read.input_bound is None else read.input_bound


def dac(x: Array, read: ReadSpec) -> Array:
    """Digital values → what the DAC actually drives, in digital units: clipped to
    ±input_bound and quantised to ``2^dac_bits − 1`` levels."""
    if read.input_bound is None:
        return x
    bound = read.input_bound
    v = jnp.clip(x, -bound, bound)
    if read.dac_bits is not None:
        step = bound / (2 ** (read.dac_bits - 1) - 1)
        v = jnp.round(v / step) * step
    return v


def adc_bound(read: ReadSpec) -> float | None:
    """The ADC's full scale in output units (``adc_bound``, else ``out_bound × full scale``)."""
    if read.adc_bound is not None:
        return read.adc_bound
    if read.out_bound is None:
        return None
    return read.out_bound * full_scale(read) * read.gain


def adc(y: Array, read: ReadSpec, nonnegative: bool) -> Array:
    """Neuron outputs → the values the ADC reports (at most ``2^adc_bits`` distinct values)."""
    bound = adc_bound(read)
    if bound is None:
        return y
    lo = 0.0 if nonnegative else -bound
    y = jnp.clip(y, lo, bound)
    if read.adc_bits is not None:
        # unipolar: 2^bits levels over [0, bound]; bipolar: 2^bits − 1 levels symmetric about 0
        # (mid-tread). Either way zero is exactly a level.
        levels = 2**read.adc_bits - 1 if nonnegative else 2 ** (read.adc_bits - 1) - 1
        step = bound / levels
        y = jnp.round(y / step) * step
    return y


def effective_weights(stored: Array, phys: LayerPhysics) -> Array:
    """What the forward pass sees of each cell: ``read_gain · (w + offset)`` from a layer's
    ``DeviceState.synapses`` array, 0 where no synapse exists (a synapse of several cells reads
    the mean of this over its cells)."""
    w, offset = split_synapses(stored)
    if offset is not None:
        w = w + offset
    if phys.read_gain is not None:
        w = w * phys.read_gain
    return w


def bias_line(stored: Array, phys: LayerPhysics, layer: LayerSpec, age: Array) -> Array:
    """What the bias line adds to each output current, ``(n_out,)`` float32: the last row of
    ``mean_over_cells(effective_weights(stored, phys))``, to the bit, computed once.

    Why not simply ``weights[-1]``: XLA's CPU compiler fuses that cheap row into every
    element-wise loop that uses the currents, and some of those loops (the next layer's input,
    the learner's records) run after ``program`` has rewritten ``stored`` in place, so XLA keeps
    a copy of the whole old synapse array alive in each training step: with 8 cells per
    synapse two copies of 64 MB per hidden layer, and the 8-cell row re-read in every such loop
    (784-1000-1000-1000, 8 cells: a step of 34-37 ms against 22-24 ms without;
    ``tests/mortal/test_ff.py`` checks the compiled step for copies). On a CPU the row is
    therefore the value of a ``while_loop`` whose trip count XLA cannot know (at least 1: one
    more when ``age`` is NaN, and the body does not depend on its carry), a buffer of its own
    that XLA neither removes nor fuses into the consumers. Other backends (not measured) get
    the plain row. ``age``: the device's age, s."""
    gain = None if phys.read_gain is None else phys.read_gain[..., -1:, :]
    row_phys = dataclasses.replace(phys, read_gain=gain)

    def row(synapses: Array) -> Array:
        return mean_over_cells(effective_weights(synapses[..., -1:, :], row_phys),
                               layer)[-1].astype(jnp.float32)

    def own_buffer(synapses: Array) -> Array:
        trips = 1 + jnp.isnan(age).astype(jnp.int32)
        # the first carry has the type of a value drawn from the synapses (under shard_map:
        # varying over the population axis, as the body's output is); its value is replaced
        anchor = jnp.real(synapses.reshape(-1)[0]).astype(jnp.float32)
        init = (jnp.int32(0), jnp.zeros(synapses.shape[-1:], jnp.float32) + 0 * anchor)
        return jax.lax.while_loop(lambda carry: carry[0] < trips,
                                  lambda carry: (carry[0] + 1, row(synapses)), init)[1]

    return jax.lax.platform_dependent(stored, cpu=own_buffer, default=row)


def neuron_outputs(layer: LayerSpec, phys: LayerPhysics, currents: Array) -> Array:
    """Each neuron's own transfer curve applied to its input current (no noise, no ADC)."""
    return transfer(layer.neuron, currents, phys.gain, phys.threshold, phys.sharpness,
                    phys.saturation)


def _layer(layer: LayerSpec, phys: LayerPhysics, stored: Array, age: Array,
           fail_noise: float, x: Array, key: Array | None, matmul_dtype: str = "float32"
           ) -> tuple[Array, Array]:
    read = layer.read
    v = dac(x, read)
    weights = mean_over_cells(effective_weights(stored, phys), layer)
    bias_v = 1.0 if layer.connectivity.bias else 0.0
    currents = matmul(v, weights[:-1], matmul_dtype) + bias_v * bias_line(stored, phys, layer,
                                                                          age)
    scale = full_scale(read)  # the periphery rescales the analog result to digital units
    noise = None
    if read.out_noise > 0:
        assert key is not None
        noise = _noise.normal(jax.random.fold_in(key, 0), currents.shape)
        currents = currents + (read.out_noise * scale) * noise
    if read.out_bound is not None:
        bound = read.out_bound * scale
        currents = jnp.clip(currents, -bound, bound)
    if read.gain != 1.0:
        currents = read.gain * currents
    y = neuron_outputs(layer, phys, currents)
    if phys.fail_time is not None:
        assert key is not None and phys.fail_noisy is not None
        dead = age >= phys.fail_time
        if noise is None:
            noise = _noise.normal(jax.random.fold_in(key, 1), y.shape)
        # a dead neuron's own output-noise draw is otherwise unused: it is its garbage
        garbage = fail_noise * jnp.abs(noise)
        y = jnp.where(dead, jnp.where(phys.fail_noisy, garbage, 0.0), y)
    y = adc(y, read, layer.neuron.nonnegative)
    v_full = jnp.concatenate([v, jnp.full((*v.shape[:-1], 1), bias_v, v.dtype)], axis=-1)
    return v_full, y


def needs_read_key(device: Device) -> bool:
    """Whether ``measure`` on this device draws random numbers (and so needs a key)."""
    spec = device.spec
    return spec.aging.mortal or any(layer.read.out_noise > 0 for layer in spec.layers)


@jax.jit
def _measure(device: Device, x: Array, key: Array | None) -> Measurement:
    spec = device.spec
    x = x.astype(jnp.float32)
    if spec.normalize_input:
        x = normalize(x)
    inputs, outputs = [], []
    for idx, (layer, phys) in enumerate(zip(spec.layers, device.physics, strict=True)):
        k = None if key is None else jax.random.fold_in(key, idx)
        v, y = _layer(layer, phys, device.state.synapses[idx], device.state.age,
                      spec.aging.fail_noise, x, k, spec.matmul_dtype)
        inputs.append(v)
        outputs.append(y)
        x = normalize(y)
    return Measurement(tuple(inputs), tuple(outputs))


def measure(device: Device, x: Array, *, key: Array | None = None) -> Measurement:
    """Drive a batch of inputs through one device and read every layer.

    Args:
        device: a single device (``vmap`` this function over a population).
        x: ``(B, n_input)`` raw inputs (float; the input stage RMS-normalises them when the
           recipe says ``normalize_input``).
        key: PRNG key for the c2c read noise (output noise, noisy dead neurons). Required when the
           device's read path is noisy; a new key gives a new noise draw.
    Returns:
        ``Measurement`` with per-layer crossbar inputs ``(B, n_in + 1)`` and ADC outputs
        ``(B, n_out)``. The next layer received ``normalize(outputs[l])``.
    """
    spec = device.spec
    if device.population_size is not None:
        raise ValueError("measure: this is a population; vmap measure over it (or index one "
                         "device with pop[i])")
    if x.ndim != 2 or x.shape[-1] != spec.widths[0]:
        raise ValueError(f"measure: inputs must have shape (batch, {spec.widths[0]}), "
                         f"got {tuple(x.shape)}")
    if key is None and needs_read_key(device):
        raise ValueError("measure: this device's read path is noisy (out_noise > 0 or a finite "
                         "lifetime); pass key=jax.random.key(...)")
    return _measure(device, x, key)

