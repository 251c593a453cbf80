"""Where does the `rram` preset lose accuracy on MNIST, and which periphery setting recovers it?

Short runs (784-500-500-500, the first ``--train`` MNIST training images, ``--epochs`` epochs,
Hinton's learner recipe, one device, seed 0) with one part of the physics or of the periphery
changed at a time; validation error on the first ``--val`` (2,000) validation images, goodness
readout and one-pass softmax readout. Writes ``scripts/results/rram_ablation.json`` and prints a
table.

Reproduce (≈ 10 minutes on 2 CPU cores; ``--only TEXT ...`` re-runs the rows whose names contain
one of the texts and keeps the others)::

    python scripts/rram_ablation.py --data-dir ../shared/data

The rows answer five questions: which physics costs accuracy (write noise, step noise, the
update model, the read path, the neurons), whether digital accumulation of requests helps,
which read gain (the periphery's scale between digital weights and conductances) is best, at
that gain, whether the write noise or the soft bounds set the floor, and how long the request
should be smoothed (the "smoothing" rows, session 9, measured with ``--train 50000 --epochs 3
--val 10000 --only smoothing --out scripts/results/rram_ablation_smoothing.json``)::

    python scripts/rram_ablation.py --data-dir ../shared/data --train 50000 --epochs 3 \
        --val 10000 --only smoothing --out scripts/results/rram_ablation_smoothing.json

Session 10 rows (accumulation, batch, learning rate, gain, label strength and weight decay at
smoothing 0.98; ``scripts/results/rram_ablation_accumulate.json``)::

    python scripts/rram_ablation.py --data-dir ../shared/data --train 50000 --epochs 3 \
        --val 10000 --only "smoothing 0.98" --out scripts/results/rram_ablation_accumulate.json

Session 24 rows (several cells per synapse, ``SynapseSpec.cells``, on top of the session-20
recipe; ``scripts/results/rram_ablation_cells.json``)::

    python scripts/rram_ablation.py --data-dir ../shared/data --train 50000 --epochs 3 \
        --val 10000 --only cells "goodness belief, ideal, strength 2, smooth 0.98" \
        --out scripts/results/rram_ablation_cells.json

Session 25 rows (8 cells per synapse at read gains 0.18 and 0.25; 8 cells and one cell
without write noise; 8 cells without one other part of the physics at a time;
``scripts/results/rram_ablation_cells_s25.json``)::

    python scripts/rram_ablation.py --data-dir ../shared/data --train 50000 --epochs 3 \
        --val 10000 --only "-cell synapses" --out scripts/results/rram_ablation_cells_s25.json

Session 19 rows (negatives from the goodness belief; learning rate 0.02, per-layer learning-rate
scaling and Adam on top; session 20: when the learning rate starts to decay;
``scripts/results/rram_ablation_gbelief.json``)::

    python scripts/rram_ablation.py --data-dir ../shared/data --train 50000 --epochs 3 \
        --val 10000 --only "goodness belief" --out scripts/results/rram_ablation_gbelief.json

One device and 2,000 validation images per row: differences below about 1.5 points are within
what another seed or another 2,000 images would move (``--seed`` gives another device).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import devices  # noqa: E402
from mortal import data, ff  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from _entry import run_script  # noqa: E402
from _record import write_json  # noqa: E402
from _revision import git_revision  # noqa: E402

from mortal.xla_cpu import xla_flags  # noqa: E402

_RRAM = devices.preset("rram", (784, 500, 500, 500))
_SYN = dataclasses.asdict(_RRAM.synapse)
_CLEAN = {**_SYN, "update_model": "constant_step", "step_noise": 0.0, "write_noise": 0.0,
          "dw_min_sigma": 0.0, "up_down_sigma": 0.0, "bound_sigma": 0.0}

# name → (preset, learner config changes, recipe changes)
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, dict[str, Any]]]] = {
    "ideal": ("ideal", {}, {}),
    "rram, gain 0.5, accumulate 8 (session-1 recipe)": (
        "rram", {"accumulate": 8.0}, {"read": {"gain": 0.5}}),
    "rram, gain 0.5": ("rram", {}, {"read": {"gain": 0.5}}),
    "rram, gain 0.5, no write noise": (
        "rram", {}, {"read": {"gain": 0.5}, "synapse": {**_SYN, "write_noise": 0.0}}),
    "rram, gain 0.5, no step noise": (
        "rram", {}, {"read": {"gain": 0.5}, "synapse": {**_SYN, "step_noise": 0.0}}),
    "rram, gain 0.5, clean constant-step synapses": (
        "rram", {}, {"read": {"gain": 0.5}, "synapse": _CLEAN}),
    "rram, gain 0.5, clean synapses, accumulate 8": (
        "rram", {"accumulate": 8.0}, {"read": {"gain": 0.5}, "synapse": _CLEAN}),
    "rram read path and neurons, ideal synapses": (
        "rram", {}, {"read": {"gain": 0.5},
                     "synapse": dataclasses.asdict(devices.preset("ideal").synapse)}),
    "rram, gain 0.05": ("rram", {}, {"read": {"gain": 0.05}}),
    "rram, gain 0.12 (chosen)": ("rram", {}, {"read": {"gain": 0.12}}),
    "rram, gain 0.12, accumulate 2": ("rram", {"accumulate": 2.0}, {"read": {"gain": 0.12}}),
    "rram, gain 0.12, no write noise": (
        "rram", {}, {"read": {"gain": 0.12}, "synapse": {**_SYN, "write_noise": 0.0}}),
    "rram, gain 0.25": ("rram", {}, {"read": {"gain": 0.25}}),
    # at the chosen gain: which of write noise and soft bounds sets the floor (session 7)
    "rram, gain 0.12, no write noise, constant steps": (
        "rram", {}, {"read": {"gain": 0.12},
                     "synapse": {**_SYN, "write_noise": 0.0, "update_model": "constant_step"}}),
    "rram, gain 0.12, no write noise, bounds x10": (
        "rram", {}, {"read": {"gain": 0.12},
                     "synapse": {**_SYN, "write_noise": 0.0, "w_min": 10 * _SYN["w_min"],
                                 "w_max": 10 * _SYN["w_max"]}}),
    "rram, gain 0.12, no write noise, no step noise": (
        "rram", {}, {"read": {"gain": 0.12},
                     "synapse": {**_SYN, "write_noise": 0.0, "step_noise": 0.0}}),
    "rram, gain 0.12, no write noise, accumulate 2": (
        "rram", {"accumulate": 2.0}, {"read": {"gain": 0.12},
                                      "synapse": {**_SYN, "write_noise": 0.0}}),
    "rram, gain 0.12, constant steps": (
        "rram", {}, {"read": {"gain": 0.12}, "synapse": {**_SYN, "update_model": "constant_step"}}),
    "rram, gain 0.12, clean constant-step synapses": (
        "rram", {}, {"read": {"gain": 0.12}, "synapse": _CLEAN}),
    "rram read path and neurons, ideal synapses, gain 0.12": (
        "rram", {}, {"read": {"gain": 0.12},
                     "synapse": dataclasses.asdict(devices.preset("ideal").synapse)}),
    "rram, gain 0.05, constant steps": (
        "rram", {}, {"read": {"gain": 0.05}, "synapse": {**_SYN, "update_model": "constant_step"}}),
    "rram, gain 0.05, constant steps, no write noise": (
        "rram", {}, {"read": {"gain": 0.05},
                     "synapse": {**_SYN, "update_model": "constant_step", "write_noise": 0.0}}),
    # session 9: how long the periphery smooths the request before it becomes pulses (Hinton's
    # "delay", 0.9 in his recipe); run with --train 50000 --epochs 3 --val 10000 --only
    # smoothing
    **{f"rram, gain 0.12, label strength 2, smoothing {m}": (
        "rram", {"label_strength": 2.0, "momentum": m}, {"read": {"gain": 0.12}})
       for m in (0.0, 0.9, 0.95, 0.98, 0.99, 0.995)},
    # session 10: at smoothing 0.98, fewer writes by accumulating requests digitally until they
    # are worth k pulses, or by fewer, larger steps (batch and learning rate scaled together);
    # run with --train 50000 --epochs 3 --val 10000 --only "smoothing 0.98"
    **{f"rram, gain 0.12, label strength 2, smoothing 0.98, accumulate {k}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "accumulate": float(k)},
        {"read": {"gain": 0.12}}) for k in (1, 2, 4, 8)},
    **{f"rram, gain 0.12, label strength 2, smoothing 0.98, batch {b}, lr {b / 10_000:g}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "batch_size": b, "lr": b / 10_000},
        {"read": {"gain": 0.12}}) for b in (200, 400)},
    # session 10: at smoothing 0.98, do the learning rate, read gain, label strength and weight
    # decay chosen at 0.9 still hold?
    **{f"rram, gain 0.12, label strength 2, smoothing 0.98, lr {lr}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "lr": lr}, {"read": {"gain": 0.12}})
       for lr in (0.005, 0.02)},
    **{f"rram, gain {g}, label strength 2, smoothing 0.98": (
        "rram", {"label_strength": 2.0, "momentum": 0.98}, {"read": {"gain": g}})
       for g in (0.08, 0.18)},
    "rram, gain 0.12, label strength 3, smoothing 0.98": (
        "rram", {"label_strength": 3.0, "momentum": 0.98}, {"read": {"gain": 0.12}}),
    "rram, gain 0.12, label strength 2, smoothing 0.98, no weight decay": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "weight_decay": 0.0},
        {"read": {"gain": 0.12}}),
    # session 19: with the negatives drawn from the goodness belief (the readout that lagged at
    # lr 0.02 no longer picks them), do a larger learning rate, per-layer learning-rate scaling
    # or Adam help? run with --train 50000 --epochs 3 --val 10000 --only "goodness belief"
    # (named so that the session-10 command's --only "smoothing 0.98" does not pick them up)
    **{f"goodness belief, rram, gain 0.12, strength 2, smooth 0.98{extra}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "negative_belief": "goodness",
                 **changes}, {"read": {"gain": 0.12}})
       for extra, changes in (
           ("", {}),
           (", lr 0.02", {"lr": 0.02}),
           (", layer lr x1/x2/x2", {"layer_lr_scale": (1.0, 2.0, 2.0)}),
           (", layer lr x2/x1/x1", {"layer_lr_scale": (2.0, 1.0, 1.0)}),
           (", layer lr x0.5/x1/x1", {"layer_lr_scale": (0.5, 1.0, 1.0)}),
           (", layer lr x1/x3/x3", {"layer_lr_scale": (1.0, 3.0, 3.0)}),
           (", adam lr 3e-2", {"optimizer": "adam", "lr": 3e-2}),
           (", adam lr 1e-2", {"optimizer": "adam", "lr": 1e-2}),
           (", adam lr 3e-3", {"optimizer": "adam", "lr": 3e-3}),
           (", adam lr 1e-3", {"optimizer": "adam", "lr": 1e-3}),
           (", adam lr 3e-4", {"optimizer": "adam", "lr": 3e-4}),
           (", adam lr 1e-4", {"optimizer": "adam", "lr": 1e-4}),
           (", adam lr 3e-5", {"optimizer": "adam", "lr": 3e-5}),
           # session 20: when the learning rate starts to decay (Hinton's: half-way)
           (", decay from 0", {"lr_decay_start": 0.0}),
           (", decay from 0.25", {"lr_decay_start": 0.25}),
           (", decay from 0.75", {"lr_decay_start": 0.75}),
           # session 21: with the decay from 0.9, drop requests below a fraction of a pulse
           # (a synapse is then written only where the smoothed request is large)
           (", decay from 0.9", {"lr_decay_start": 0.9}),
           *((f", decay from 0.9, dead zone {z}", {"lr_decay_start": 0.9, "dead_zone": z})
             for z in (0.25, 0.5, 1.0)),
           (", decay from 0.9, dead zone 0.5, lr 0.02",
            {"lr_decay_start": 0.9, "dead_zone": 0.5, "lr": 0.02}),
       )},
    # session 24: several cells per synapse (Boybat et al. 2018; SynapseSpec.cells), each write
    # to one cell chosen at random: the write noise reaches the weight divided by the cells;
    # run with --train 50000 --epochs 3 --val 10000 --only "cells"
    **{f"goodness belief, rram, gain 0.12, strength 2, smooth 0.98, decay from 0.9, cells {c}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "negative_belief": "goodness",
                 "lr_decay_start": 0.9}, {"read": {"gain": 0.12}, "synapse": {"cells": c}})
       for c in (1, 2, 4, 8)},
    # session 25: with 8 cells the write noise reaching a weight is smaller; is the read gain
    # chosen for one cell still the best, and how far are 8 cells from no write noise at all?
    # run with --train 50000 --epochs 3 --val 10000 --only "-cell synapses"
    **{f"goodness belief, rram, gain {g}, strength 2, smooth 0.98, decay from 0.9, "
       f"{c}-cell synapses{extra}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "negative_belief": "goodness",
                 "lr_decay_start": 0.9}, {"read": {"gain": g}, "synapse": {"cells": c, **syn}})
       for g, c, extra, syn in ((0.18, 8, "", {}), (0.25, 8, "", {}),
                                (0.12, 8, ", no write noise", {"write_noise": 0.0}),
                                (0.12, 1, ", no write noise", {"write_noise": 0.0}))},
    # ... and with 8 cells, which of the rest of the physics costs what: one part at a time
    **{f"goodness belief, rram, gain 0.12, strength 2, smooth 0.98, decay from 0.9, "
       f"8-cell synapses without {what}": (
        "rram", {"label_strength": 2.0, "momentum": 0.98, "negative_belief": "goodness",
                 "lr_decay_start": 0.9}, {"read": {"gain": 0.12, **read}, "synapse": {
                     "cells": 8, **syn}, **({"neuron": neuron} if neuron else {})})
       for what, syn, read, neuron in (
           ("soft bounds (constant steps)", {"update_model": "constant_step"}, {}, None),
           ("step noise", {"step_noise": 0.0}, {}, None),
           ("write noise and soft bounds", {"write_noise": 0.0,
                                            "update_model": "constant_step"}, {}, None),
           ("write noise, soft bounds and step noise", {
               "write_noise": 0.0, "update_model": "constant_step", "step_noise": 0.0}, {}, None),
           ("d2d spread of the synapses", {"bound_sigma": 0.0, "dw_min_sigma": 0.0,
                                           "up_down_sigma": 0.0}, {}, None),
           ("converters and read noise", {}, {"input_bound": None, "dac_bits": None,
                                              "out_noise": 0.0, "out_bound": None,
                                              "adc_bits": None}, None),
           ("analog neurons (ReLU)", {}, {}, dataclasses.asdict(
               devices.preset("ideal").layer(0).neuron)),
           # the converters one at a time
           ("read noise", {}, {"out_noise": 0.0}, None),
           ("input DAC quantisation", {}, {"dac_bits": None}, None),
           ("output ADC quantisation", {}, {"adc_bits": None}, None),
           # ... and the clips: the DAC's range (±4 digital units: wider is coarser and, with
           # read noise and current bound in full-scale units, noisier) and the current bound
           # (the ADC's range kept at 12 x 4 x 0.12)
           ("the DAC's ±4 range (±8)", {}, {"input_bound": 8.0}, None),
           ("the DAC's ±4 range (±16)", {}, {"input_bound": 16.0}, None),
           ("the current bound", {}, {"out_bound": None, "adc_bound": 12 * 4.0 * 0.12}, None))},
    # session 25: the DAC's range as a periphery setting (±4 clips the strength-2 label lines
    # and the peaks of sparse normalised activities), with one cell, and with 8 cells at ±6
    # and at ±8 with stronger label lines
    **{f"goodness belief, rram, gain 0.12, strength {ls:g}, smooth 0.98, decay from 0.9, "
       f"{c}-cell synapses, DAC ±{b:g}": (
        "rram", {"label_strength": ls, "momentum": 0.98, "negative_belief": "goodness",
                 "lr_decay_start": 0.9}, {"read": {"gain": 0.12, "input_bound": b},
                                          "synapse": {"cells": c}})
       for ls, c, b in ((2.0, 1, 8.0), (2.0, 8, 6.0), (3.0, 8, 8.0))},
    # the same learners on the ideal device: what Adam costs without the physics
    **{f"goodness belief, ideal, strength 2, smooth 0.98{extra}": (
        "ideal", {"label_strength": 2.0, "momentum": 0.98, "negative_belief": "goodness",
                  **changes}, {})
       for extra, changes in (("", {}), (", adam lr 1e-3", {"optimizer": "adam", "lr": 1e-3}))},
}


def run_row(preset: str, cfg_changes: dict[str, Any], spec_changes: dict[str, dict[str, Any]],
            ds: data.Dataset, args: argparse.Namespace) -> dict[str, float]:
    spec = devices.preset(preset, (784, args.width, args.width, args.width))
    for part, changes in spec_changes.items():
        spec = spec.replace_in_layers(part, **changes)
    cfg = ff.FFConfig(epochs=args.epochs, **cfg_changes)
    x, y = jnp.asarray(ds.x_train[: args.train]), jnp.asarray(ds.y_train[: args.train])
    xv, yv = jnp.asarray(ds.x_val[:args.val]), jnp.asarray(ds.y_val[:args.val])
    pop = devices.spawn(spec, 1, jax.random.key(args.seed))
    state = ff.init_population(pop, cfg, ff.steps_per_epoch(x.shape[0], cfg))
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        keys, order = ff.epoch_keys(jax.random.key(args.seed + 1), epoch, 1, cfg)
        state, _ = ff.population_epoch(state, x, y, keys, order, cfg=cfg, bench=ff.BENCH)
    ev = ff.evaluate_population(state, xv, yv, jax.random.split(jax.random.key(args.seed + 2), 1),
                                cfg, 1000, ff.BENCH)
    return {"val_goodness_error": float(ev["goodness_error"][0]),
            "val_softmax_error": float(ev["softmax_error"][0]),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train", type=int, default=10_000, help="training images used")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--val", type=int, default=2000, help="validation images used")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" / "rram_ablation.json"))
    parser.add_argument("--only", nargs="+", metavar="TEXT", default=None,
                        help="run only the rows whose name contains one of these texts; the "
                             "other rows of an existing --out file of the same settings are kept")
    args = parser.parse_args()
    ds = data.load("mnist", args.data_dir)
    result: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]),
                              "train_images": args.train, "epochs": args.epochs,
                              "widths": [784, args.width, args.width, args.width],
                              "seed": args.seed, "val_images": args.val,
                              "git_revision": git_revision(ROOT), "xla_flags": xla_flags(),
                              "rows": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = list(ROWS)
    if args.only is not None:
        names = [n for n in ROWS if any(text in n for text in args.only)]
        if not names:
            sys.exit(f"rram_ablation: no row name contains any of {args.only}; the rows are: "
                     + "; ".join(ROWS))
        if out.exists():
            old = json.loads(out.read_text())
            same = all(old.get(k, 2000 if k == "val_images" else None) == result[k]
                       for k in ("train_images", "epochs", "widths", "seed", "val_images"))
            if same:  # keep the rows measured before; the command that made them is kept too
                result["rows"] = {n: r for n, r in old["rows"].items() if n not in names}
                result["earlier_commands"] = [*old.get("earlier_commands", []), old["command"]]
    for name in names:
        preset, cfg_changes, spec_changes = ROWS[name]
        # each row keeps its own revision and XLA flags: rows measured by earlier commands (on
        # other hosts, e.g. with or without AVX-512's 512-bit vectors) stay in the file
        result["rows"][name] = {**run_row(preset, cfg_changes, spec_changes, ds, args),
                                "git_revision": result["git_revision"],
                                "xla_flags": result["xla_flags"]}
        write_json(out, result)
        r = result["rows"][name]
        print(f"{name:<52} {100 * r['val_goodness_error']:6.2f} "
              f"{100 * r['val_softmax_error']:6.2f}", flush=True)
    print(f"\n{'setting':<52} {'good.%':>6} {'soft.%':>6}  (validation error)")
    for name, r in result["rows"].items():
        print(f"{name:<52} {100 * r['val_goodness_error']:6.2f} "
              f"{100 * r['val_softmax_error']:6.2f}")


if __name__ == "__main__":
    run_script(main)
