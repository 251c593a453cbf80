"""Figures (matplotlib: PNG, PDF or SVG, as the file's suffix says). Analysis code: it may use
``devices.inspect``; learners never do."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import devices

# the figure formats written, by file suffix (compared in lower case)
FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def pyplot():  # import lazily and headless: plotting must work without a display
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
        path: where to write the figure: a ``.png``, ``.pdf`` or ``.svg`` file (written
            atomically: a temporary file, then renamed).
        layer: which layer's neurons (0-based).
        neurons_per_device: how many neurons of each device to draw (the first ones).
        currents: ``(K,)`` input currents to sweep (normalised current units); default
            ``linspace(-1, 3, 200)`` around the curves' thresholds.
    Returns:
        The path written.
    """
    figure_format(path)  # an unknown suffix fails before the drawing
    spec = population.spec
    if not 0 <= layer < spec.n_layers:
        raise ValueError(f"layer must be in [0, {spec.n_layers - 1}], got {layer}")
    pop = population if population.population_size is not None else devices.stack([population])
    i = jnp.linspace(-1.0, 3.0, 200) if currents is None else jnp.asarray(currents)
    curves = np.asarray(jax.vmap(lambda d: devices.transfer_curves(d, layer, i))(pop))
    nominal = np.asarray(devices.nominal_curve(spec, layer, i))
    plt = pyplot()
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
    return save_figure(fig, path)


def figure_format(path: str | os.PathLike[str]) -> str:
    """The format a figure at ``path`` is written in, from its suffix (``FORMATS``); raises
    ``ValueError`` for another suffix."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: name a {', '.join(list(FORMATS)[:-1])} or "
                         f"{list(FORMATS)[-1]} file (the suffix picks the figure's format)")
    return FORMATS[suffix]


def save_figure(fig: object, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure to ``path`` in the format its suffix names (``.png``, ``.pdf``
    or ``.svg``) and close it. The image is written to ``path + '.part'`` and renamed when
    complete, so an interrupted save leaves no file that looks finished. Returns the path."""
    plt = pyplot()
    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    try:
        fmt = figure_format(path)
        fig.savefig(tmp, format=fmt)  # type: ignore[attr-defined]
        os.replace(tmp, out)
    except OSError as exc:  # a full disk: name the file the user gave, not the temporary one
        tmp.unlink(missing_ok=True)
        if exc.errno is None:
            raise
        raise type(exc)(exc.errno, exc.strerror, str(out)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out


def plot_run(run: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """One figure summarising a run file (read with ``mortal.runs`` only; live files work),
    written to ``path``: PNG, PDF or SVG as its suffix says.

    Panels: population learning curves (median validation error and the min–max spread, per
    population); final test error of every device (the teacher marked); distillation fidelity
    (test top-1 agreement of every student with its teacher, per generation); neuron transfer
    curves (layer 0) of the first devices of each population against the nominal curve.
    """
    from mortal import runs

    figure_format(path)  # an unknown suffix fails before the drawing
    plt = pyplot()
    pops = runs.populations(run)
    lineage = runs.lineage(run)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=110)
    palette = plt.get_cmap("tab10")
    colors = {name: palette(i % 10) for i, name in enumerate(pops)}
    # 1. learning curves
    ax = axes[0, 0]
    drawn = False
    for name in pops:
        m = runs.metrics(run, name)
        err = m.get("val_goodness_error")
        if err is None or not len(err):
            continue
        ok = np.isfinite(err).all(axis=1)
        if not ok.any():  # a live run before its first validation
            continue
        drawn = True
        ep, e = m["epoch"][ok], 100 * err[ok]
        c = colors.get(name)
        ax.plot(ep, np.median(e, axis=1), color=c, lw=2, label=f"{name}: median")
        ax.fill_between(ep, e.min(axis=1), e.max(axis=1), color=c, alpha=0.25,
                        label=f"{name}: min–max over {e.shape[1]} devices")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation error % (goodness readout)")
    if drawn:
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no validation measurement yet", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_title("learning curves")
    ax.grid(alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=8)
    # 2. final error per device
    ax = axes[0, 1]
    x0 = 0
    teachers = {r["teacher"] for r in lineage}
    for name in pops:
        fin = runs.final(run, name).get("test_goodness_error")
        if fin is None:
            continue
        idx = np.arange(len(fin)) + x0
        bars = ax.bar(idx, 100 * np.nan_to_num(fin, nan=0.0), color=colors.get(name),
                      label=name)
        for i, b in enumerate(bars):
            if f"{name}/{i}" in teachers:
                b.set_edgecolor("black")
                b.set_linewidth(2)
                ax.annotate("teacher", (b.get_x() + b.get_width() / 2, b.get_height()),
                            ha="center", va="bottom", fontsize=7)
        x0 += len(fin) + 1
    ax.set_xticks([])
    ax.set_xlabel("device")
    ax.set_ylabel("test error %")
    ax.set_title("final test error per device")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    # 3. fidelity per student and generation
    ax = axes[1, 0]
    student_pops = [n for n in pops if n != "train"]
    if student_pops:
        x0, low = 0, 100.0
        for name in student_pops:
            agree = 100 * np.nan_to_num(runs.final(run, name).get("test_agreement",
                                                                   np.array([])), nan=0.0)
            gen = next((r["generation"] for r in lineage
                        if r["student"].startswith(f"{name}/")), 1)
            ax.bar(np.arange(len(agree)) + x0, agree, color=colors[name],
                   label=f"generation {gen} ({name})")
            x0 += len(agree) + 1
            low = min(low, float(agree.min()) if len(agree) else low)
        ax.set_ylim(max(0.0, low - 10), 100)
        ax.legend(fontsize=8)
        ax.set_title(f"distillation fidelity (T = {lineage[0]['temperature']})"
                     if lineage else "distillation fidelity")
    else:
        ax.text(0.5, 0.5, "no distillation in this run", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_title("distillation fidelity")
    ax.set_xticks([])
    ax.set_xlabel("student (grouped by generation)")
    ax.set_ylabel("test top-1 agreement with its teacher %")
    ax.grid(alpha=0.3, axis="y")
    # 4. transfer curves
    ax = axes[1, 1]
    i = jnp.linspace(-1.0, 3.0, 120)
    spec = None
    for name in pops:
        info = runs.population_info(run, name)
        for d in range(min(3, info["size"])):
            dev = runs.load_device(run, d, name)
            spec = dev.spec
            curves = np.asarray(devices.transfer_curves(dev, 0, i))
            for j in range(min(8, curves.shape[0])):
                ax.plot(i, curves[j], color=colors.get(name), alpha=0.3, lw=0.7,
                        label=f"{name} devices 0–2" if d == 0 and j == 0 else None)
    if spec is not None:
        ax.plot(i, np.asarray(devices.nominal_curve(spec, 0, i)), color="black", lw=2,
                label=f"nominal {spec.layer(0).neuron.family}")
    ax.set_xlabel("crossbar output current (normalised units)")
    ax.set_ylabel("neuron output")
    ax.set_title("layer-0 neuron transfer curves")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    status = runs.status(run)
    fig.suptitle(f"{Path(run).name}  ({status})", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)
