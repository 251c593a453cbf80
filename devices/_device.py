"""The device pytree: static recipe + hidden physics (fixed at fab) + state (changes).

A *population* is the same pytree with a leading axis on every array leaf; the recipe is static
metadata shared by all members, so ``vmap`` over a population needs no special handling.

Arrays whose d2d spread is zero in the recipe are not stored (``None``): the nominal value from the
recipe is used instead. This keeps an ``ideal`` device as small as its weights.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    ``synapses[l]``: the stored state of layer ``l``'s synapses, shape ``(n_in + 1, n_out)``
    (``(cells, n_in + 1, n_out)`` with several cells per synapse; see ``SynapseSpec``):

    * float32 conductances (normalised units) when the recipe has no write noise;
    * complex64 ``w + i·offset`` when it has: the real part is the stored conductance, the
      imaginary part the read offset left by the last write of that cell (c2c). Both change in
      the same write, and one array lets the compiled write path produce them in one loop over
      the synapses instead of two (see BENCHMARKS.md, *One array for conductance and offset*).

    ``weights`` and ``offsets`` give the two parts as float32 arrays. ``age``: device time in
    seconds (scalar).
    """

    synapses: tuple[Array, ...]
    age: Array

    @staticmethod
    def pack(weights: Sequence[Array], offsets: Sequence[Array | None], age: Array
             ) -> DeviceState:
        """The state of per-layer conductances and read offsets (``None``: no write noise)."""
        return DeviceState(tuple(pack_synapses(w, o) for w, o in zip(weights, offsets,
                                                                      strict=True)), age)

    @property
    def weights(self) -> tuple[Array, ...]:
        """Stored conductances of every layer: float32, the shape of ``synapses[l]``."""
        return tuple(split_synapses(s)[0] for s in self.synapses)

    @property
    def offsets(self) -> tuple[Array | None, ...]:
        """Read offsets of every layer (float32), ``None`` where the recipe has no write noise."""
        return tuple(split_synapses(s)[1] for s in self.synapses)

    def with_weights(self, weights: Sequence[Array]) -> DeviceState:
        """The same state with other stored conductances (read offsets and age kept)."""
        return DeviceState.pack(weights, self.offsets, self.age)

    def unpacked(self) -> StoredState:
        """The same state as separate float32 arrays: the layout checkpoints store."""
        return StoredState(self.weights, self.offsets, self.age)


@dataclass(frozen=True)
class StoredState:
    """A device state as checkpoints store it: ``weights[l]`` and ``offsets[l]`` (``None``
    without write noise) as float32 arrays, and ``age``; ``packed()`` gives the
    ``DeviceState``. Dataset names in run files: ``device_state.weights.0``, ... (see
    docs/log-format.md)."""

    weights: tuple[Array, ...]
    offsets: tuple[Array | None, ...]
    age: Array

    def packed(self) -> DeviceState:
        return DeviceState.pack(self.weights, self.offsets, self.age)


def pack_synapses(w: Array, offset: Array | None) -> Array:
    """One layer's stored synapse array: ``w`` (float32) or ``w + i·offset`` (complex64)."""
    return w if offset is None else jax.lax.complex(w, offset)


def split_synapses(stored: Array) -> tuple[Array, Array | None]:
    """``(conductances, read offsets or None)`` of one layer's stored synapse array."""
    if jnp.iscomplexobj(stored):
        return jnp.real(stored), jnp.imag(stored)
    return stored, None


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


for _cls in (LayerPhysics, DeviceState, StoredState, Measurement):
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
