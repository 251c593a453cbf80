"""Time: conductance drift and the progressive death of neurons."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._device import Device, DeviceState, pin

Array = jax.Array


@jax.jit
def _age(device: Device, dt: Array) -> Device:
    spec = device.spec
    t = device.state.age
    t_new = t + dt
    weights = []
    for w, phys, layer in zip(device.state.weights, device.physics, spec.layers, strict=True):
        if phys.drift_nu is not None:
            t0 = spec.aging.drift_t0
            ratio = (t_new + t0) / (t + t0)
            w = pin(w * jnp.power(ratio, -phys.drift_nu), phys, layer)
        weights.append(w)
    state = DeviceState.pack(weights, device.state.offsets, t_new.astype(jnp.float32))
    return Device(spec, device.physics, state)


def age(device: Device, dt: float | Array) -> Device:
    """Let ``dt`` seconds pass for a device (drift of every synapse, neuron failures).

    Drift: ``w ← w · ((t + dt + t0) / (t + t0))^(−ν_ij)`` (stuck synapses excepted). Neurons whose
    fab-time failure time has passed read flat or noisy from then on (see ``AgingSpec``).
    ``dt`` must be >= 0 (a scalar, or one per device under ``vmap``).
    """
    if not isinstance(dt, jax.core.Tracer) and not bool(jnp.all(jnp.asarray(dt) >= 0)):
        raise ValueError(f"age: dt must be a time >= 0 in seconds, got {dt!r}")
    return _age(device, jnp.asarray(dt, jnp.float32))
