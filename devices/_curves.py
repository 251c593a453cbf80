"""Analog neuron transfer curves (see ``NeuronSpec`` for the equations).

All functions broadcast: currents ``i`` of shape ``(..., n_out)`` against per-neuron parameters of
shape ``(n_out,)`` (or scalars), float32 in current units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._spec import NeuronSpec

Array = jax.Array


def transfer(neuron: NeuronSpec, i: Array, gain: Array | float, threshold: Array | float,
             sharpness: Array | float, saturation: Array | float) -> Array:
    """Neuron outputs ``y = f(i)`` for the family in ``neuron`` with the given parameters."""
    family = neuron.family
    if family == "relu":
        y = gain * jnp.maximum(i - threshold, 0.0)
    elif family == "softplus":
        y = gain * jax.nn.softplus(sharpness * (i - threshold)) / sharpness
    elif family == "square_law":
        y = gain * sharpness * jnp.square(jnp.maximum(i - threshold, 0.0))
    elif family == "tanh_sat":
        return saturation * jnp.tanh(gain * (i - threshold) / saturation)
    elif family == "exp":
        # clip the exponent where the output would pass the saturation, so nothing overflows
        z_max = jnp.log(saturation * sharpness / gain)
        y = gain * jnp.exp(jnp.minimum(sharpness * (i - threshold), z_max)) / sharpness
    elif family == "tabulated":
        assert neuron.table is not None
        xs = jnp.asarray(neuron.table[0], jnp.float32)
        ys = jnp.asarray(neuron.table[1], jnp.float32)
        y = gain * jnp.interp(sharpness * (i - threshold), xs, ys) / sharpness
    else:  # pragma: no cover - validated in the recipe
        raise ValueError(f"unknown neuron family {family!r}")
    if neuron.saturation == float("inf") and neuron.saturation_sigma == 0:
        return y
    return jnp.minimum(y, saturation)


def nominal_transfer(neuron: NeuronSpec, i: Array) -> Array:
    """The family's nominal curve (no device variation)."""
    return transfer(neuron, i, neuron.gain, neuron.threshold, neuron.sharpness,
                    neuron.saturation)
