"""Sealed mortal devices: fab recipes, device physics and populations.

The bench interface (all a learner may use):
    ``measure(device, x, *, key)``   drive inputs, read every layer (``Measurement``)
    ``program(device, requests, *, key)``   ask for weight changes; the device applies its physics
    ``age(device, dt)``   let time pass (drift, neuron death)
    ``normalize(a)``   the known digital RMS-normalisation stage between layers
    ``matmul(a, b, dtype)``   a product at the simulator's precision (``DeviceSpec.matmul_dtype``)

Fabrication: ``fabricate(spec, key)``, ``spawn(spec, n, key)``, ``stack``, ``device_keys``.
Recipes: ``DeviceSpec`` and its parts, ``preset(name, widths)``, ``PRESETS``.
Analysis only (never in learning code): ``inspect``, ``transfer_curves``, ``nominal_curve``.
State layout: ``DeviceState`` (what ``Device.state`` holds: one array per layer, complex64
conductance + i·read offset where the recipe has write noise) and ``StoredState`` (the same as
separate float32 arrays: what checkpoints store).
"""

from ._aging import age
from ._device import Device, DeviceState, Measurement, StoredState
from ._fab import device_keys, fabricate, spawn, stack
from ._inspect import inspect, nominal_curve, transfer_curves
from ._matmul import matmul
from ._read import measure, normalize
from ._spec import (
    FAMILIES,
    MATMUL_DTYPES,
    UPDATE_MODELS,
    AgingSpec,
    ConnectivitySpec,
    DeviceSpec,
    LayerSpec,
    NeuronSpec,
    ReadSpec,
    SpecError,
    SynapseSpec,
)
from ._write import program
from .presets import PRESETS, REFERENCE_WIDTHS, preset

__all__ = [
    "FAMILIES",
    "MATMUL_DTYPES",
    "PRESETS",
    "REFERENCE_WIDTHS",
    "UPDATE_MODELS",
    "AgingSpec",
    "ConnectivitySpec",
    "Device",
    "DeviceSpec",
    "DeviceState",
    "LayerSpec",
    "Measurement",
    "NeuronSpec",
    "ReadSpec",
    "SpecError",
    "StoredState",
    "SynapseSpec",
    "age",
    "device_keys",
    "fabricate",
    "inspect",
    "matmul",
    "measure",
    "nominal_curve",
    "normalize",
    "preset",
    "program",
    "spawn",
    "stack",
    "transfer_curves",
]
