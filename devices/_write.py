"""The write path: requested weight changes → pulse counts → the device's own update physics."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from . import _noise
from ._device import (
    Device,
    DeviceState,
    LayerPhysics,
    bounds,
    pack_synapses,
    pin,
    split_synapses,
    steps,
)
from ._fab import offset_from_normal
from ._spec import LayerSpec

Array = jax.Array


def pulse_counts(request: Array, layer: LayerSpec, u: Array) -> Array:
    """Signed pulse counts for a requested change (float32, integer-valued).

    ``n = stochastic_round(request / dw_min)`` with the recipe's *nominal* step (the periphery
    does not know each synapse's real step), clipped to ``±max_pulses``; ``u``: uniforms on
    [0, 1) of the request's shape (c2c). ``E[n] = request/dw_min`` inside the clip range.
    """
    syn = layer.synapse
    return jnp.clip(_rounded_pulses(request, layer, u), -syn.max_pulses, syn.max_pulses)


def _rounded_pulses(request: Array, layer: LayerSpec, u: Array) -> Array:
    """``stochastic_round(request / dw_min)`` before the clip (float32, integer-valued)."""
    r = request * (1.0 / layer.synapse.dw_min)
    floor = jnp.floor(r)
    return floor + (u < (r - floor))


def _integer_power(base: Array, exponent: Array, max_exponent: int) -> Array:
    """``base ** exponent`` for integer-valued float ``exponent`` in ``[0, max_exponent]``, by
    repeated squaring (one multiply-select per bit of ``max_exponent``): several times cheaper
    per element than ``exp(exponent · log(base))`` on a CPU, exact up to float32 rounding."""
    bits = exponent.astype(jnp.int32)
    power = jnp.ones_like(base)
    square = base
    for bit in range(max(int(max_exponent), 1).bit_length()):
        power = jnp.where((bits >> bit) & 1 == 1, power * square, power)
        square = square * square
    return power


def apply_pulses(w: Array, n: Array, layer: LayerSpec, phys: LayerPhysics, xi: Array | None
                 ) -> Array:
    """Apply ``n`` signed pulses to stored weights ``w`` in closed form (before pinning).

    * ``constant_step``: ``w + n·dw_up`` (``n > 0``) or ``w − |n|·dw_down``.
    * ``soft_bounds``:   up ``b − (b − w)(1 − dw_up/b)^n`` with ``b = w_max``;
      down ``a + (w − a)(1 − dw_down/|a|)^|n|`` with ``a = w_min``.
    * c2c step noise: ``step_noise · |mean step| · sqrt(|n|) · ξ`` (zero mean), ``ξ`` the
      standard normals given (one per synapse; unused when the recipe has no step noise).
    The result is clipped to each synapse's bounds.
    """
    syn = layer.synapse
    lo, hi = bounds(phys, layer)
    dw_up, dw_down = steps(phys, layer)
    up = n > 0
    count = jnp.abs(n)
    if syn.update_model == "constant_step":
        target = w + n * jnp.where(up, dw_up, dw_down)
    elif syn.update_model == "soft_bounds":  # one power per synapse: the bound it moves toward
        bound = jnp.where(up, hi, lo)
        step = jnp.where(up, dw_up, dw_down)
        target = bound - (bound - w) * _integer_power(1.0 - step / jnp.abs(bound), count,
                                                      syn.max_pulses)
    else:  # pragma: no cover - ideal is handled by the caller
        raise ValueError(f"apply_pulses does not apply to update_model {syn.update_model!r}")
    if syn.step_noise > 0:
        assert xi is not None
        # |mean step| · sqrt(|n|) = |target − w| / sqrt(|n|) (0 where nothing moved)
        spread = jnp.abs(target - w) * jax.lax.rsqrt(jnp.maximum(count, 1.0))
        target = target + syn.step_noise * spread * xi
    return jnp.clip(target, lo, hi)


_CELL_STREAM = 1  # fold_in(key, ·) that chooses the written cell (the noise uses key itself)
_OVERFLOW_ROUND_STREAM = 2  # with overflow cells: the rounding uniforms of the whole pulse count
_OVERFLOW_CELL_STREAM = 16  # with overflow cells: + j, the noise of the j-th written cell
_PER_SYNAPSE = ("read_gain", "w_min", "w_max", "dw_up", "dw_down", "stuck", "drift_nu")


def _program_layer(layer: LayerSpec, phys: LayerPhysics, stored: Array, request: Array,
                   key: Array) -> Array:
    """Write one layer: ``stored`` and the result as ``DeviceState.synapses[l]``."""
    cells = layer.synapse.cells
    if cells == 1:
        return _program_cell(layer, phys, stored, request, key)
    if layer.synapse.overflow_cells > 0:
        return _program_with_overflow(layer, phys, stored, request, key)
    # several cells per synapse: one cell of the layer, drawn at random, takes the whole change,
    # scaled so that the synapse's mean moves by the request
    k = jax.random.randint(jax.random.fold_in(key, _CELL_STREAM), (), 0, cells)
    return _program_one_of_cells(layer, phys, stored, k, cells * request, key)


def _program_one_of_cells(layer: LayerSpec, phys: LayerPhysics, stored: Array, k: Array,
                          request: Array, key: Array, pulses: Array | None = None) -> Array:
    """Write cell ``k`` (a traced index) of ``stored`` ``(cells, n_in + 1, n_out)`` with
    ``_program_cell``; the other cells are returned as they were."""

    def cell(a: Array | None) -> Array | None:
        return None if a is None else jax.lax.dynamic_index_in_dim(a, k, 0, keepdims=False)

    phys_k = dataclasses.replace(phys, **{f: cell(getattr(phys, f)) for f in _PER_SYNAPSE})
    new_k = _program_cell(layer, phys_k, cell(stored), request, key, pulses)
    return jax.lax.dynamic_update_index_in_dim(stored, new_k, k, 0)


def _program_with_overflow(layer: LayerSpec, phys: LayerPhysics, stored: Array,
                           request: Array, key: Array) -> Array:
    """Several cells, ``overflow_cells > 0``: the whole pulse count of ``cells · request``,
    ``±max_pulses`` at a time, over ``1 + overflow_cells`` distinct cells drawn for the layer."""
    syn = layer.synapse
    order = jax.random.permutation(jax.random.fold_in(key, _CELL_STREAM), syn.cells)
    u = _noise.uniform(jax.random.fold_in(key, _OVERFLOW_ROUND_STREAM), request.shape)
    left = _rounded_pulses(syn.cells * request, layer, u)
    for j in range(1 + syn.overflow_cells):  # a few cells, unrolled at trace time
        n = jnp.clip(left, -syn.max_pulses, syn.max_pulses)
        left = left - n
        stored = _program_one_of_cells(layer, phys, stored, order[j], request,
                                       jax.random.fold_in(key, _OVERFLOW_CELL_STREAM + j), n)
    return stored


def _program_cell(layer: LayerSpec, phys: LayerPhysics, stored: Array, request: Array,
                  key: Array, pulses: Array | None = None) -> Array:
    """Write one cell per synapse: arrays ``(n_in + 1, n_out)``. Conductance and read offset
    (``stored``: float32, or complex64 ``w + i·offset``) come out of one expression, so that
    XLA computes both in one loop over the synapses. ``pulses``: signed pulse counts already
    chosen by the periphery (pulsed update models only); ``None``: rounded from ``request``."""
    syn = layer.synapse
    w, offset = split_synapses(stored)
    if syn.update_model == "ideal":
        new = w + request
        if not (math.isinf(syn.w_min) and math.isinf(syn.w_max)):
            lo, hi = bounds(phys, layer)
            new = jnp.clip(new, lo, hi)
        written = request != 0
        xi_offset = None if offset is None else _noise.normal(key, w.shape)
    else:
        # three words per synapse from one key: the rounding uniform, and one Box–Muller pair
        # whose two normals are the step noise and the new write offset (one logarithm for both)
        b_round, b_radius, b_angle = _noise.words(key, w.shape, 3)
        n = pulse_counts(request, layer, _noise.uniform_from_bits(b_round)) if pulses is None \
            else pulses
        xi_step, xi_offset = _noise.normal_pair_from_bits(b_radius, b_angle)
        new = apply_pulses(w, n, layer, phys, xi_step)
        written = n != 0
        new = jnp.where(written, new, w)
    new = pin(new, phys, layer)
    if offset is not None:
        assert xi_offset is not None
        offset = jnp.where(written, offset_from_normal(xi_offset, layer, phys), offset)
    return pack_synapses(new, offset)


@jax.jit
def _program(device: Device, requests: tuple[Array, ...], key: Array) -> Device:
    synapses = tuple(
        _program_layer(layer, phys, device.state.synapses[idx], requests[idx].astype(jnp.float32),
                       jax.random.fold_in(key, idx))
        for idx, (layer, phys) in enumerate(zip(device.spec.layers, device.physics, strict=True)))
    return Device(device.spec, device.physics, DeviceState(synapses, device.state.age))


def program(device: Device, requests: tuple[Array, ...] | list[Array], *, key: Array) -> Device:
    """Ask a device for weight changes; it applies them with its own update physics.

    Args:
        device: a single device (``vmap`` over a population).
        requests: one float array per layer, shape ``(n_in + 1, n_out)`` like the weights (last
            row: the bias line), in normalised weight units. Zero means "leave alone".
        key: PRNG key for the c2c randomness of writing (stochastic rounding, step noise, write
            noise). Required even for exact updates, so code never depends on the recipe.
    Returns:
        The device with new state. What was actually written is not reported: stuck and absent
        synapses do not move, pulses are finite and noisy, bounds saturate. With several cells
        per synapse, one cell per layer (drawn from ``key``) takes ``cells`` times the request
        (and with ``overflow_cells``, further cells what the pulse clip cut from it).
    """
    spec = device.spec
    if device.population_size is not None:
        raise ValueError("program: this is a population; vmap program over it (or index one "
                         "device with pop[i])")
    requests = tuple(requests)
    if len(requests) != spec.n_layers:
        raise ValueError(f"program: expected {spec.n_layers} per-layer requests, got "
                         f"{len(requests)}")
    for idx, (req, layer) in enumerate(zip(requests, spec.layers, strict=True)):
        expected = (layer.n_in + 1, layer.n_out)
        if tuple(req.shape) != expected:
            raise ValueError(f"program: request for layer {idx} must have shape {expected} "
                             f"(inputs + bias line, outputs), got {tuple(req.shape)}")
    return _program(device, requests, key)
