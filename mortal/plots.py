"""Figures (matplotlib, PNG). Analysis code: it may use ``devices.inspect``; learners never do."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import devices


def _pyplot():  # import lazily and headless: plotting must work without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_transfer_curves(population: devices.Device, path: str | os.PathLike[str], *,
                         layer: int = 0, neurons_per_device: int = 16,
                         currents: np.ndarray | None = None) -> Path:
    """Draw the neuron transfer curves of a population against the family's nominal curve.

    Args:
        population: a population (``spawn``) or a single device.
        path: where to write the PNG (written atomically: a temporary file, then renamed).
        layer: which layer's neurons (0-based).
        neurons_per_device: how many neurons of each device to draw (the first ones).
        currents: ``(K,)`` input currents to sweep (normalised current units); default
            ``linspace(-1, 3, 200)`` around the curves' thresholds.
    Returns:
        The path written.
    """
    spec = population.spec
    if not 0 <= layer < spec.n_layers:
        raise ValueError(f"layer must be in [0, {spec.n_layers - 1}], got {layer}")
    pop = population if population.population_size is not None else devices.stack([population])
    i = jnp.linspace(-1.0, 3.0, 200) if currents is None else jnp.asarray(currents)
    curves = np.asarray(jax.vmap(lambda d: devices.transfer_curves(d, layer, i))(pop))
    nominal = np.asarray(devices.nominal_curve(spec, layer, i))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    colors = plt.get_cmap("tab10")
    k = min(neurons_per_device, curves.shape[1])
    for d in range(curves.shape[0]):
        for j in range(k):
            ax.plot(i, curves[d, j], color=colors(d % 10), alpha=0.35, lw=0.8,
                    label=f"device {d}" if j == 0 else None)
    ax.plot(i, nominal, color="black", lw=2.2, label=f"nominal {spec.layer(layer).neuron.family}")
    ax.set_xlabel("crossbar output current (normalised units)")
    ax.set_ylabel("neuron output (current units)")
    ax.set_title(f"{spec.name}: layer {layer} transfer curves, {curves.shape[0]} devices × "
                 f"{k} neurons")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, out)
    return out
