"""The write path: requested weight changes → pulse counts → the device's own update physics."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from . import _noise
from ._device import Device, DeviceState, LayerPhysics, bounds, pin, steps
from ._fab import write_offset
from ._spec import LayerSpec

Array = jax.Array


def pulse_counts(request: Array, layer: LayerSpec, key: Array) -> Array:
    """Signed pulse counts for a requested change (float32, integer-valued).

    ``n = stochastic_round(request / dw_min)`` with the recipe's *nominal* step (the periphery
    does not know each synapse's real step), clipped to ``±max_pulses``. ``E[n] = request/dw_min``
    inside the clip range.
    """
    syn = layer.synapse
    r = request / syn.dw_min
    floor = jnp.floor(r)
    n = floor + (_noise.uniform(key, r.shape) < (r - floor))
    return jnp.clip(n, -syn.max_pulses, syn.max_pulses)


def apply_pulses(w: Array, n: Array, layer: LayerSpec, phys: LayerPhysics, key: Array | None
                 ) -> Array:
    """Apply ``n`` signed pulses to stored weights ``w`` in closed form (before pinning).

    * ``constant_step``: ``w + n·dw_up`` (``n > 0``) or ``w − |n|·dw_down``.
    * ``soft_bounds``:   up ``b − (b − w)(1 − dw_up/b)^n`` with ``b = w_max``;
      down ``a + (w − a)(1 − dw_down/|a|)^|n|`` with ``a = w_min``.
    * c2c step noise: ``step_noise · |mean step| · sqrt(|n|) · N(0, 1)`` (zero mean).
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
        # shrink^count as exp(count · log1p(−step/|bound|)): a generic power costs ~10× more
        target = bound - (bound - w) * jnp.exp(count * jnp.log1p(-step / jnp.abs(bound)))
    else:  # pragma: no cover - ideal is handled by the caller
        raise ValueError(f"apply_pulses does not apply to update_model {syn.update_model!r}")
    if syn.step_noise > 0:
        assert key is not None
        mean_step = jnp.abs(target - w) / jnp.maximum(count, 1.0)
        xi = _noise.normal(key, w.shape)
        target = target + syn.step_noise * mean_step * jnp.sqrt(count) * xi
    return jnp.clip(target, lo, hi)


def _program_layer(layer: LayerSpec, phys: LayerPhysics, w: Array, offset: Array | None,
                   request: Array, key: Array) -> tuple[Array, Array | None]:
    syn = layer.synapse
    k_round, k_step, k_offset = jax.random.split(key, 3)
    if syn.update_model == "ideal":
        new = w + request
        if not (math.isinf(syn.w_min) and math.isinf(syn.w_max)):
            lo, hi = bounds(phys, layer)
            new = jnp.clip(new, lo, hi)
        written = request != 0
    else:
        n = pulse_counts(request, layer, k_round)
        new = apply_pulses(w, n, layer, phys, k_step)
        written = n != 0
        new = jnp.where(written, new, w)
    new = pin(new, phys, layer)
    if offset is not None:
        offset = jnp.where(written, write_offset(k_offset, layer, phys), offset)
    return new, offset


@jax.jit
def _program(device: Device, requests: tuple[Array, ...], key: Array) -> Device:
    weights, offsets = [], []
    for idx, (layer, phys) in enumerate(zip(device.spec.layers, device.physics, strict=True)):
        w, off = _program_layer(layer, phys, device.state.weights[idx],
                                device.state.offsets[idx],
                                requests[idx].astype(jnp.float32), jax.random.fold_in(key, idx))
        weights.append(w)
        offsets.append(off)
    state = DeviceState(tuple(weights), tuple(offsets), device.state.age)
    return Device(device.spec, device.physics, state)


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
        synapses do not move, pulses are finite and noisy, bounds saturate.
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
