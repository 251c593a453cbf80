"""The device pytree: static recipe + hidden physics (fixed at fab) + state (changes).

A *population* is the same pytree with a leading axis on every array leaf; the recipe is static
metadata shared by all members, so ``vmap`` over a population needs no special handling.

Arrays whose d2d spread is zero in the recipe are not stored (``None``): the nominal value from the
recipe is used instead. This keeps an ``ideal`` device as small as its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from ._spec import DeviceSpec, LayerSpec

Array = jax.Array


def _register(cls: type, meta: tuple[str, ...] = ()) -> type:
    fields = [f for f in cls.__dataclass_fields__ if f not in meta]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=list(meta))


@dataclass(frozen=True)
class LayerPhysics:
    """Hidden physics of one layer, all drawn at fab time (d2d). Shapes: synapse arrays
    ``(n_in + 1, n_out)`` (last row: the bias line; ``(cells, n_in + 1, n_out)`` with several
    cells per synapse, except ``mask``), neuron arrays ``(n_out,)``; float32 unless said.
    ``None``: the recipe's nominal value holds for every element."""

    mask: Array | None  # bool: the synapse exists
    read_gain: Array | None  # multiplies the stored weight in the forward pass
    w_min: Array | None  # lower bound of each synapse
    w_max: Array | None  # upper bound of each synapse
    dw_up: Array | None  # weight change of one up pulse
    dw_down: Array | None  # magnitude of the weight change of one down pulse
    stuck: Array | None  # int8: 0 ok, 1 stuck at 0, 2 stuck at w_max, 3 stuck at w_min
    drift_nu: Array | None  # drift exponent ν of each synapse
    gain: Array  # neuron gain g
    threshold: Array  # neuron threshold θ (current units)
    sharpness: Array  # neuron sharpness k (1 / current units)
    saturation: Array  # neuron saturation s (current units; inf: none)
    fail_time: Array | None  # device time (s) at which the neuron fails
    fail_noisy: Array | None  # bool: the neuron fails noisy (else flat)


@dataclass(frozen=True)
class DeviceState:
    """What changes during a device's life.

    ``weights[l]``: stored conductances of layer ``l``, ``(n_in + 1, n_out)`` float32, normalised
    units (``(cells, n_in + 1, n_out)`` with several cells per synapse; see ``SynapseSpec``).
    ``offsets[l]``: the read offset left by the last write of each synapse (write noise, c2c;
    the shape of ``weights[l]``), or ``None`` when the recipe has no write noise. ``age``: device
    time in seconds (scalar).
    """

    weights: tuple[Array, ...]
    offsets: tuple[Array | None, ...]
    age: Array


@dataclass(frozen=True)
class Device:
    """One fabricated instance (or a population of them, with a leading axis on every array).

    Learners may only pass it to ``measure``, ``program`` and ``age``; ``inspect`` exposes the
    physics for analysis and plots. Index a population with ``pop[i]`` or ``pop[a:b]``.
    """

    spec: DeviceSpec
    physics: tuple[LayerPhysics, ...]
    state: DeviceState

    def __getitem__(self, index: Any) -> Device:
        if self.state.age.ndim == 0:
            raise TypeError("this is a single device, not a population: it cannot be indexed")
        return jax.tree.map(lambda a: a[index], self)

    @property
    def population_size(self) -> int | None:
        """Number of devices along the leading axis, or ``None`` for a single device."""
        return None if self.state.age.ndim == 0 else int(self.state.age.shape[0])


@dataclass(frozen=True)
class Measurement:
    """What a bench reads from a device for a batch of ``B`` inputs.

    ``inputs[l]``: ``(B, n_in + 1)`` float32, the inputs that reached layer ``l``'s crossbar
    (after the DAC's clipping and quantisation, in digital units; last column: the bias line,
    1 if wired else 0).
    ``outputs[l]``: ``(B, n_out)`` float32, the neuron outputs as the ADC reports them (current
    units), before the normalisation stage.
    """

    inputs: tuple[Array, ...]
    outputs: tuple[Array, ...]


for _cls in (LayerPhysics, DeviceState, Measurement):
    _register(_cls)
_register(Device, meta=("spec",))


def synapse_shape(layer: LayerSpec) -> tuple[int, ...]:
    """Shape of a layer's per-synapse state and physics arrays: ``(n_in + 1, n_out)``, with a
    leading cell axis ``(cells, n_in + 1, n_out)`` when the recipe has several cells per synapse
    (the connectivity mask is per synapse and never has it)."""
    shape = (layer.n_in + 1, layer.n_out)
    cells = layer.synapse.cells
    return shape if cells == 1 else (cells, *shape)


def mean_over_cells(w: Array, layer: LayerSpec) -> Array:
    """A synapse's weight from its cells: the mean over the cell axis (``w`` as is for one
    cell). ``w``: ``synapse_shape(layer)``; returns ``(n_in + 1, n_out)``.

    The cells are added one after another and the sum divided by their count, which is what
    ``jnp.mean(w, axis=0)`` computes, to the bit, on XLA's CPU backend; written out, the sum is
    one fused elementwise pass instead of a reduction over the major axis, which XLA's CPU
    backend runs about 10x slower (784-1000-1000-1000 `rram`, 8 cells: a 100-image `measure`
    took 166 ms with ``jnp.mean``, 17 ms with this).
    """
    cells = layer.synapse.cells
    if cells == 1:
        return w
    total = w[0]
    for c in range(1, cells):
        total = total + w[c]
    return total / cells


def nominal(value: Array | None, default: float) -> Array | float:
    """The stored per-element value, or the recipe's nominal scalar when none is stored."""
    return default if value is None else value


def bounds(phys: LayerPhysics, layer: LayerSpec) -> tuple[Array | float, Array | float]:
    return nominal(phys.w_min, layer.synapse.w_min), nominal(phys.w_max, layer.synapse.w_max)


def steps(phys: LayerPhysics, layer: LayerSpec) -> tuple[Array | float, Array | float]:
    syn = layer.synapse
    return (nominal(phys.dw_up, syn.dw_min * (1 + syn.up_down)),
            nominal(phys.dw_down, syn.dw_min * (1 - syn.up_down)))


def stuck_values(phys: LayerPhysics, layer: LayerSpec) -> Array:
    """The value each stuck synapse is pinned to (0 where not stuck). Needs ``phys.stuck``."""
    assert phys.stuck is not None
    lo, hi = bounds(phys, layer)
    code = phys.stuck
    zero = jnp.zeros(code.shape, jnp.float32)
    return jnp.where(code == 2, hi, jnp.where(code == 3, lo, zero)).astype(jnp.float32)


def pin(w: Array, phys: LayerPhysics, layer: LayerSpec) -> Array:
    """Absent synapses read 0 and stuck ones their stuck value, whatever was requested."""
    if phys.stuck is not None:
        w = jnp.where(phys.stuck != 0, stuck_values(phys, layer), w)
    if phys.mask is not None:  # absence wins over faults: a missing synapse carries nothing
        w = jnp.where(phys.mask, w, 0.0)
    return w
