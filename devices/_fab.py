"""Fabrication: drawing instances from a recipe (all d2d randomness lives here)."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp

from . import _noise
from ._device import Device, DeviceState, LayerPhysics, bounds, pin, synapse_shape
from ._spec import DeviceSpec, LayerSpec

Array = jax.Array

# Each physical quantity draws from its own stream, ``fold_in(layer_key, ID)``, so adding a new
# effect to the simulator never changes the draws of existing ones.
_MASK, _WINDOW, _READ_GAIN, _W_MIN, _W_MAX, _DW, _UP_DOWN, _STUCK, _STUCK_SIDE = range(9)
_NU, _GAIN, _THRESHOLD, _SHARPNESS, _SATURATION, _FAIL_TIME, _FAIL_NOISY = range(9, 16)
_INIT, _OFFSET = 16, 17


def _xi(key: Array, shape: tuple[int, ...]) -> Array:
    """Standard normal truncated at ±3 (float32)."""
    return jax.random.truncated_normal(key, -3.0, 3.0, shape, jnp.float32)


def _lognormal(key: Array, nominal: float, sigma: float, shape: tuple[int, ...]) -> Array:
    """``nominal · exp(sigma · xi)``: keeps the sign of ``nominal``; ``sigma`` = std of the log."""
    return (nominal * jnp.exp(sigma * _xi(key, shape))).astype(jnp.float32)


def _stream(key: Array, stream: int) -> Array:
    return jax.random.fold_in(key, stream)


def _connectivity(key: Array, layer: LayerSpec) -> Array | None:
    conn = layer.connectivity
    if conn.density == 1.0 and conn.receptive_field is None and conn.bias:
        return None
    n_in, n_out = layer.n_in, layer.n_out
    wired = jnp.ones((n_in, n_out), bool)
    if conn.receptive_field is not None:
        assert conn.image_shape is not None
        (h, w), r = conn.image_shape, conn.receptive_field
        k_row, k_col = jax.random.split(_stream(key, _WINDOW))
        top = jax.random.randint(k_row, (n_out,), 0, h - r + 1)
        left = jax.random.randint(k_col, (n_out,), 0, w - r + 1)
        rows = jnp.arange(h)[:, None]
        cols = jnp.arange(w)[:, None]
        in_rows = (rows >= top) & (rows < top + r)  # (h, n_out)
        in_cols = (cols >= left) & (cols < left + r)  # (w, n_out)
        wired = (in_rows[:, None, :] & in_cols[None, :, :]).reshape(n_in, n_out)
        if conn.global_inputs:
            wired = wired.at[: conn.global_inputs].set(True)
    if conn.density < 1.0:
        wired = wired & jax.random.bernoulli(_stream(key, _MASK), conn.density, (n_in, n_out))
    bias_row = jnp.full((1, n_out), conn.bias)
    return jnp.concatenate([wired, bias_row], axis=0)


def _layer_physics(key: Array, layer: LayerSpec, spec: DeviceSpec) -> LayerPhysics:
    syn, neu, aging = layer.synapse, layer.neuron, spec.aging
    shape = synapse_shape(layer)  # with a leading cell axis when a synapse has several cells
    n = (layer.n_out,)

    def per_synapse(stream: int, nominal: float, sigma: float) -> Array | None:
        if sigma == 0 or math.isinf(nominal):
            return None
        return _lognormal(_stream(key, stream), nominal, sigma, shape)

    dw_up = dw_down = None
    if syn.update_model != "ideal" and (syn.dw_min_sigma > 0 or syn.up_down_sigma > 0):
        dw = _lognormal(_stream(key, _DW), syn.dw_min, syn.dw_min_sigma, shape)
        a = syn.up_down + syn.up_down_sigma * _xi(_stream(key, _UP_DOWN), shape)
        a = jnp.clip(a, -0.95, 0.95)
        dw_up, dw_down = dw * (1 + a), dw * (1 - a)

    stuck = None
    if syn.stuck_zero_rate > 0 or syn.stuck_bound_rate > 0:
        u = jax.random.uniform(_stream(key, _STUCK), shape)
        upper = jax.random.bernoulli(_stream(key, _STUCK_SIDE), 0.5, shape)
        at_bound = (u >= syn.stuck_zero_rate) & (u < syn.stuck_zero_rate + syn.stuck_bound_rate)
        stuck = jnp.where(u < syn.stuck_zero_rate, 1, jnp.where(at_bound, jnp.where(upper, 2, 3),
                                                                 0)).astype(jnp.int8)

    drift_nu = None
    if aging.drifts:
        nu = aging.drift_nu + aging.drift_nu_sigma * _xi(_stream(key, _NU), shape)
        drift_nu = jnp.maximum(nu, 0.0).astype(jnp.float32)

    fail_time = fail_noisy = None
    if aging.mortal:
        fail_time = _lognormal(_stream(key, _FAIL_TIME), aging.lifetime, aging.lifetime_sigma, n)
        fail_noisy = jax.random.bernoulli(_stream(key, _FAIL_NOISY), aging.fail_noisy_fraction, n)

    mask = _connectivity(key, layer)
    if stuck is not None and mask is not None:  # a missing synapse cannot be stuck
        stuck = jnp.where(mask, stuck, 0).astype(jnp.int8)
    return LayerPhysics(
        mask=mask,
        read_gain=per_synapse(_READ_GAIN, 1.0, syn.read_gain_sigma),
        w_min=per_synapse(_W_MIN, syn.w_min, syn.bound_sigma),
        w_max=per_synapse(_W_MAX, syn.w_max, syn.bound_sigma),
        dw_up=dw_up,
        dw_down=dw_down,
        stuck=stuck,
        drift_nu=drift_nu,
        gain=_lognormal(_stream(key, _GAIN), neu.gain, neu.gain_sigma, n),
        threshold=(neu.threshold + neu.threshold_sigma * _xi(_stream(key, _THRESHOLD), n)
                   ).astype(jnp.float32),
        sharpness=_lognormal(_stream(key, _SHARPNESS), neu.sharpness, neu.sharpness_sigma, n),
        saturation=_lognormal(_stream(key, _SATURATION), neu.saturation, neu.saturation_sigma, n),
        fail_time=fail_time,
        fail_noisy=fail_noisy,
    )


def _initial_weights(key: Array, layer: LayerSpec, phys: LayerPhysics) -> Array:
    """Digital weights ``init_scale · N(0, 1) / sqrt(fan_in)`` per neuron as conductances
    (divided by the read gain; bias row 0), clipped, pinned; every cell of a synapse starts at
    its synapse's value (then clipped to its own bounds)."""
    syn = layer.synapse
    z = jax.random.normal(_stream(key, _INIT), (layer.n_in, layer.n_out), jnp.float32)
    if phys.mask is None:
        fan_in = jnp.float32(layer.n_in)
    else:
        fan_in = jnp.maximum(phys.mask[:-1].sum(axis=0), 1).astype(jnp.float32)
    w = syn.init_scale * z / jnp.sqrt(fan_in) / layer.read.gain  # digital → conductance
    w = jnp.concatenate([w, jnp.zeros((1, layer.n_out), jnp.float32)], axis=0)
    w = jnp.broadcast_to(w, synapse_shape(layer))
    lo, hi = bounds(phys, layer)
    if not (math.isinf(syn.w_min) and math.isinf(syn.w_max)):
        w = jnp.clip(w, lo, hi)
    return pin(w, phys, layer)


def offset_from_normal(xi: Array, layer: LayerSpec, phys: LayerPhysics) -> Array:
    """The read offset a write leaves, ``write_noise · dw_min · ξ``, from standard normals ``ξ``
    of the weights' shape (c2c); 0 where no synapse exists or it is stuck."""
    syn = layer.synapse
    offset = syn.write_noise * syn.dw_min * xi
    if phys.mask is not None:
        offset = jnp.where(phys.mask, offset, 0.0)
    if phys.stuck is not None:
        offset = jnp.where(phys.stuck != 0, 0.0, offset)
    return offset


def write_offset(key: Array, layer: LayerSpec, phys: LayerPhysics) -> Array:
    """A fresh read offset left by a write: ``write_noise · dw_min · N(0, 1)`` (c2c), one per
    cell."""
    shape = synapse_shape(layer)
    return offset_from_normal(_noise.normal(key, shape), layer, phys)


@partial(jax.jit, static_argnums=0)
def fabricate(spec: DeviceSpec, key: Array) -> Device:
    """Draw one device instance from ``spec`` with ``key`` (bit-identical for the same key).

    Args:
        spec: the fab recipe (static).
        key: a JAX PRNG key (``jax.random.key(seed)``).
    Returns:
        A ``Device`` with hidden physics and initial state (weights drawn as in Hinton's recipe,
        clipped to the bounds; age 0).
    """
    physics, weights, offsets = [], [], []
    for idx, layer in enumerate(spec.layers):
        k = jax.random.fold_in(key, idx)
        phys = _layer_physics(k, layer, spec)
        physics.append(phys)
        weights.append(_initial_weights(k, layer, phys))
        offsets.append(write_offset(_stream(k, _OFFSET), layer, phys)
                       if layer.synapse.write_noise > 0 else None)
    state = DeviceState.pack(weights, offsets, jnp.zeros((), jnp.float32))
    return Device(spec, tuple(physics), state)


def device_keys(key: Array, n: int) -> Array:
    """The fab keys of the ``n`` members of ``spawn(spec, n, key)``: member ``i`` is
    ``fabricate(spec, device_keys(key, n)[i])``."""
    return jax.random.split(key, n)


def spawn(spec: DeviceSpec, n: int, key: Array) -> Device:
    """A population of ``n`` independent instances: ``vmap(fabricate)`` over split keys.

    Returns a ``Device`` whose every array has a leading axis of size ``n``.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"spawn: population size n must be a positive integer, got {n!r}")
    return jax.vmap(partial(fabricate, spec))(device_keys(key, n))


def stack(devices: list[Device] | tuple[Device, ...]) -> Device:
    """Stack single devices (same recipe) into a population, or concatenate populations."""
    if not devices:
        raise ValueError("stack: need at least one device")
    specs = {d.spec for d in devices}
    if len(specs) != 1:
        raise ValueError("stack: all devices must share one recipe (spec); got "
                         f"{len(specs)} different ones")
    singles = [d.population_size is None for d in devices]
    if all(singles):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *devices)
    if not any(singles):
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *devices)
    raise ValueError("stack: mix of single devices and populations; stack singles first")
