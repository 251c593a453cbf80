"""Looking inside a device: for analysis and plots only, never for learning."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._curves import nominal_transfer
from ._device import Device, bounds, mean_over_cells, steps, synapse_shape
from ._read import effective_weights, neuron_outputs
from ._spec import DeviceSpec

Array = jax.Array


def inspect(device: Device) -> dict[str, Any]:
    """Every hidden quantity of a single device as full arrays (vmap it for a population).

    Returns ``{"age": (), "layers": [per-layer dict]}``; each layer dict holds synapse arrays
    ``(n_in + 1, n_out)`` (``mask``, ``read_gain``, ``w_min``, ``w_max``, ``dw_up``, ``dw_down``,
    ``stuck``, ``drift_nu``, ``weights`` (stored), ``effective_weights`` (what a read sees); with
    several cells per synapse all but ``mask`` and ``effective_weights`` are per cell,
    ``(cells, n_in + 1, n_out)``, and ``effective_weights`` is their synapse's mean) and
    neuron arrays ``(n_out,)`` (``gain``, ``threshold``, ``sharpness``, ``saturation``,
    ``fail_time``, ``fail_noisy``). Nominal values are broadcast where the device stores none.
    """
    layers = []
    for idx, (layer, phys) in enumerate(zip(device.spec.layers, device.physics, strict=True)):
        shape = synapse_shape(layer)
        n = (layer.n_out,)

        def full(value: Array | float, shape: tuple[int, ...] = shape, dtype: Any = jnp.float32
                 ) -> Array:
            return jnp.broadcast_to(jnp.asarray(value, dtype), shape)

        lo, hi = bounds(phys, layer)
        up, down = steps(phys, layer)
        w = device.state.weights[idx]
        layers.append({
            "mask": full(True if phys.mask is None else phys.mask, (layer.n_in + 1, layer.n_out),
                         bool),
            "read_gain": full(1.0 if phys.read_gain is None else phys.read_gain),
            "w_min": full(lo), "w_max": full(hi),
            "dw_up": full(up), "dw_down": full(down),
            "stuck": full(0 if phys.stuck is None else phys.stuck, dtype=jnp.int8),
            "drift_nu": full(0.0 if phys.drift_nu is None else phys.drift_nu),
            "weights": w,
            "effective_weights": mean_over_cells(
                effective_weights(device.state.synapses[idx], phys), layer),
            "gain": phys.gain, "threshold": phys.threshold,
            "sharpness": phys.sharpness, "saturation": phys.saturation,
            "fail_time": full(jnp.inf if phys.fail_time is None else phys.fail_time, n),
            "fail_noisy": full(False if phys.fail_noisy is None else phys.fail_noisy, n, bool),
        })
    return {"age": device.state.age, "layers": layers}


def transfer_curves(device: Device, layer: int, currents: Array) -> Array:
    """Each neuron's own noise-free transfer curve (before the ADC) of one layer.

    Args:
        device: a single device.
        layer: layer index (0-based).
        currents: ``(K,)`` input currents (normalised current units).
    Returns:
        ``(n_out, K)`` float32 outputs.
    """
    lspec = device.spec.layer(layer)
    y = neuron_outputs(lspec, device.physics[layer], jnp.asarray(currents, jnp.float32)[:, None])
    return y.T


def nominal_curve(spec: DeviceSpec, layer: int, currents: Array) -> Array:
    """The family's nominal transfer curve of one layer, ``(K,)``."""
    return nominal_transfer(spec.layer(layer).neuron, jnp.asarray(currents, jnp.float32))
