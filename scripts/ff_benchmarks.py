"""Forward-Forward accuracy benchmarks (issue: FF in place). Writes JSON, prints a table.

Each experiment trains a population of devices in place with the FF learner (``mortal.ff``) and
reports the test error of the goodness readout (one pass per label, layers 2..L) and of the
one-pass softmax readout, per device, plus the median/min/max over the population.

Reproduce, for example::

    python scripts/ff_benchmarks.py digits-ideal digits-rram          # < 1 min each, 2 CPU cores
    python scripts/ff_benchmarks.py mnist-ideal --data-dir ../shared/data   # long: 100 epochs

Results go to ``scripts/results/ff_<experiment>.json`` (rewritten after every evaluation, so an
interrupted run keeps what it had; ``"complete": false`` until the end). With ``--checkpoint``
the state is saved after every epoch too, and ``--resume`` continues a run that crashed or was
stopped (``--stop-after E``) to the same bits as an uninterrupted one. ``--set KEY=VALUE``
changes a learner-config field and ``--tag`` names the variant's file. Seeds: fab key
``--seed`` (default 0), training key ``--seed + 1``, evaluation key ``--seed + 2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import devices  # noqa: E402
from mortal import data, ff  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from _agreement import agreement_table  # noqa: E402
from _entry import run_script  # noqa: E402
from _overrides import parse_overrides  # noqa: E402
from _record import write_json  # noqa: E402
from _revision import git_revision  # noqa: E402
from _state import load_state, save_state, state_meta  # noqa: E402

from mortal.xla_cpu import cpu_signature, xla_flags  # noqa: E402

MNIST_WIDTHS = (784, 1000, 1000, 1000)
DIGITS_WIDTHS = (74, 200, 200, 200)  # 10 label lines prepended to the 8x8 image


@dataclass(frozen=True)
class Experiment:
    dataset: str
    preset: str
    widths: tuple[int, ...]
    epochs: int
    n_devices: int = 1
    cfg: dict[str, Any] = field(default_factory=dict)
    spec_changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval_every: int = 10
    target: str = ""


EXPERIMENTS: dict[str, Experiment] = {
    "digits-ideal": Experiment("digits", "ideal", DIGITS_WIDTHS, 30, cfg={
        "batch_size": 20, "lr": 0.03, "label_placement": "prepend"}, eval_every=30,
        target="accuracy >= 96.5%, < 1 min"),
    # rram physics as in the preset; periphery: read gain 0.5 (weights use twice the conductance
    # range, so aihwkit's ReRAM write noise weighs half as much), digital accumulation of
    # requests until they are worth 8 pulses (fewer writes, fewer write-noise redraws) and label
    # lines driven at twice the strength (the label's pull on layer 1 is capped by the bounded
    # conductances; validation goodness error -1.0 point on two sets of 8 devices, session 7)
    "digits-rram": Experiment("digits", "rram", DIGITS_WIDTHS, 60, n_devices=4, cfg={
        "batch_size": 20, "lr": 0.015, "accumulate": 8.0, "label_placement": "prepend",
        "label_strength": 2.0},
        spec_changes={"read": {"gain": 0.5}}, eval_every=60,
        target="accuracy >= 95%, < 1 min"),
    "mnist-ideal": Experiment("mnist", "ideal", MNIST_WIDTHS, 100,
                              target="goodness test error <= 1.40%"),
    # MNIST rram periphery: read gain 0.12 (the 784-wide layers' weights use ~1/3 of the
    # conductance range, so the write noise, 56 dw_min redrawn at every write, weighs 1/4 of what
    # it does at gain 0.5), every request programmed at once (no accumulation: on 1000-wide
    # layers an 8-pulse threshold is a fifth of a typical weight and stalls learning). Found by
    # the ablation in scripts/rram_ablation.py.
    "mnist-rram": Experiment("mnist", "rram", MNIST_WIDTHS, 100,
                             spec_changes={"read": {"gain": 0.12}}, eval_every=5,
                             target="within 0.5 points of mnist-ideal"),
    "mnist-rram-pop8": Experiment("mnist", "rram", MNIST_WIDTHS, 10, n_devices=8,
                                  spec_changes={"read": {"gain": 0.12}},
                                  eval_every=20, target="median, min, max over 8 devices"),
    "fashion-ideal": Experiment("fashion-mnist", "ideal", MNIST_WIDTHS, 100,
                                target="test error <= 12%"),
    "mnist-unsup": Experiment("mnist", "ideal", MNIST_WIDTHS, 100,
                              cfg={"mode": "unsupervised", "image_shape": (28, 28),
                                   "readout_from": 0},
                              target="report (paper: 1.37% with 4x2000)"),
    # the paper's unsupervised network: 4 hidden layers of 2000, the linear readout on the
    # normalised activities of the last three (Hinton 2022, section 3.2)
    "mnist-unsup-4x2000": Experiment("mnist", "ideal", (784, 2000, 2000, 2000, 2000), 100,
                                     cfg={"mode": "unsupervised", "image_shape": (28, 28),
                                          "readout_from": 1},
                                     target="paper: 1.37% (4x2000, 100 epochs)"),
}


def build(exp: Experiment, epochs: int, overrides: dict[str, Any] | None = None,
          matmul_dtype: str = "float32", cells: int = 1, input_bound: float | None = None,
          overflow_cells: int = 0) -> tuple[devices.DeviceSpec, ff.FFConfig]:
    spec = devices.preset(exp.preset, exp.widths).replace(matmul_dtype=matmul_dtype)
    for part, changes in exp.spec_changes.items():
        spec = spec.replace_in_layers(part, **changes)
    if cells != 1:
        spec = spec.replace_in_layers("synapse", cells=cells)
    if overflow_cells:
        spec = spec.replace_in_layers("synapse", overflow_cells=overflow_cells)
    if input_bound is not None:
        spec = spec.replace_in_layers("read", input_bound=input_bound)
    cfg = ff.FFConfig(epochs=epochs, **{**exp.cfg, **(overrides or {})})
    ff.check_fits(spec, cfg)
    return spec, cfg


def run(name: str, exp: Experiment, ds: data.Dataset,
        args: argparse.Namespace) -> dict[str, Any]:
    epochs = args.epochs or exp.epochs
    spec, cfg = build(exp, epochs, args.overrides, args.matmul_dtype, args.cells,
                      args.input_bound, args.overflow_cells)
    n = args.devices or exp.n_devices
    pop = devices.spawn(spec, n, jax.random.key(args.seed))
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    x_test, y_test = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    x_val, y_val = jnp.asarray(ds.x_val), jnp.asarray(ds.y_val)
    state = ff.init_population(pop, cfg, ff.steps_per_epoch(x.shape[0], cfg))
    train_key, eval_key = jax.random.key(args.seed + 1), jax.random.key(args.seed + 2)
    out = Path(args.out) / f"ff_{name}{'-' + args.tag if args.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "experiment": name, "target": exp.target, "dataset": exp.dataset,
        "preset": exp.preset, "widths": list(exp.widths), "epochs": epochs, "n_devices": n,
        "learner_config": {k: (list(v) if isinstance(v, tuple) else v)
                           for k, v in dataclasses.asdict(cfg).items()},
        "device_recipe": spec.to_dict(), "seed": args.seed,
        "command": " ".join([sys.executable, *sys.argv]), "git_revision": git_revision(ROOT),
        "jax": jax.__version__, "xla_flags": xla_flags(), "device": str(jax.devices()[0]),
        "host": platform.node(), "cpu_count": os.cpu_count(), "cpu": cpu_signature(),
        "complete": False,
        "history": [],
    }
    ckpt = out.with_name(out.stem + ".ckpt.npz")
    first, before = 0, 0.0  # epochs already done, and their seconds (a resumed run)
    if args.resume:
        prior = _resumable(out, ckpt, result)
        if prior is not None and prior.get("complete"):
            print(f"[{name}] {out} is already complete; nothing to resume", flush=True)
            return prior
        if prior is not None:
            state, _, _ = load_state(ckpt, "--resume")
            result = {**prior, "resumed": [*prior.get("resumed", []),
                                            {"command": result["command"],
                                             "git_revision": result["git_revision"],
                                             "host": result["host"], "cpu": result["cpu"],
                                             "at_epoch": len(prior["history"])}]}
            first, before = len(prior["history"]), prior["train_seconds_so_far"]
            print(f"[{name}] resuming {out} after epoch {first}/{epochs}", flush=True)
    start = time.perf_counter()
    agreement_summary: dict[str, float] = {}  # pairwise agreement, set at the last epoch
    for epoch in range(first, epochs):
        keys, order = ff.epoch_keys(train_key, epoch, n, cfg)
        t0 = time.perf_counter()
        state, metrics = ff.population_epoch(state, x, y, keys, order, cfg=cfg, bench=ff.BENCH)
        jax.block_until_ready(state)
        epoch_s = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "epoch_s": round(epoch_s, 3),
                               **{k: np.asarray(v).round(4).tolist() for k, v in metrics.items()}}
        last = epoch + 1 == epochs
        if (epoch + 1) % exp.eval_every == 0 or last:
            ev_keys = jax.random.split(jax.random.fold_in(eval_key, epoch), n)
            split = (x_test, y_test) if last else (x_val, y_val)
            ev = ff.evaluate_population(state, *split, ev_keys, cfg, 1000, ff.BENCH)
            which = "test" if last else "val"
            row[f"{which}_goodness_error"] = np.asarray(ev["goodness_error"]).round(5).tolist()
            row[f"{which}_softmax_error"] = np.asarray(ev["softmax_error"]).round(5).tolist()
            if last and n > 1:
                pairs = agreement_table(np.asarray(ev["goodness_pred"]), np.asarray(split[1]))
                row["test_goodness_agreement"] = pairs["agreement"]
                agreement_summary = {f"test_goodness_agreement_{k}": pairs[f"pair_agreement_{k}"]
                                     for k in ("median", "min", "max")}
        result["history"].append(row)
        result["train_seconds_so_far"] = round(before + time.perf_counter() - start, 1)
        if args.checkpoint and epoch + 1 < epochs:  # the state first: it holds the history too
            save_state(ckpt, state, spec, cfg, {"result": result})
        print(f"[{name}] epoch {epoch + 1}/{epochs} {epoch_s:.1f}s "
              f"ff_loss {np.mean(row['ff_loss']):.3f} readout_acc "
              f"{np.mean(row['readout_acc']):.4f}"
              + "".join(f" {k} {np.round(v, 4).tolist()}" for k, v in row.items()
                        if k.endswith("_error")), flush=True)
        write_json(out, result)
        if args.stop_after and epoch + 1 == args.stop_after and epoch + 1 < epochs:
            print(f"[{name}] stopped after epoch {epoch + 1}/{epochs} (--stop-after); continue "
                  "with the same command and --resume instead of --stop-after", flush=True)
            return result
    final = result["history"][-1]
    g, s = np.asarray(final["test_goodness_error"]), np.asarray(final["test_softmax_error"])
    result["summary"] = {
        "test_goodness_error_median": float(np.median(g)), "test_goodness_error_min": float(
            g.min()), "test_goodness_error_max": float(g.max()),
        **agreement_summary,
        "test_softmax_error_median": float(np.median(s)), "test_softmax_error_min": float(
            s.min()), "test_softmax_error_max": float(s.max()),
        "train_seconds": round(before + time.perf_counter() - start, 1),
    }
    if args.save_state:
        save_state(out.with_suffix(".npz"), state, spec, cfg)
    result["complete"] = True
    write_json(out, result)
    ckpt.unlink(missing_ok=True)
    return result


_SAME_RUN = ("experiment", "dataset", "preset", "widths", "epochs", "n_devices", "seed",
             "learner_config", "device_recipe")


def _resumable(out: Path, ckpt: Path, planned: dict[str, Any]) -> dict[str, Any] | None:
    """What ``--resume`` continues: the result of the checkpoint at ``ckpt`` (the state saved
    after the last finished epoch, history included), the complete result at ``out``, or None
    (nothing started: train from the first epoch). A checkpoint or result of another recipe,
    learner, seed or length, and an unfinished result without a checkpoint, stop the script
    with one line."""
    if ckpt.exists():
        try:
            prior = state_meta(ckpt)["result"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SystemExit(f"--resume: {ckpt} is not a checkpoint of this script; delete it "
                             "to train from the first epoch") from None
    elif out.exists():
        try:
            prior = json.loads(out.read_text())
        except (OSError, ValueError):
            raise SystemExit(f"--resume: {out} is not a result of this script; delete it or "
                             "give another --tag") from None
        if not prior.get("complete"):
            raise SystemExit(f"--resume: {out} is unfinished and has no checkpoint {ckpt.name}; "
                             "run without --resume to start again (with --checkpoint to make "
                             "it resumable)")
    else:
        return None
    differ = [k for k in _SAME_RUN if prior.get(k) != json.loads(json.dumps(planned[k]))]
    if differ:
        raise SystemExit(f"--resume: {ckpt if ckpt.exists() else out} is another run "
                         f"({', '.join(differ)} differ); give the same flags as the run it "
                         "continues, or another --tag")
    return prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", choices=sorted(EXPERIMENTS))
    parser.add_argument("--epochs", type=int, help="override the experiment's epoch count")
    parser.add_argument("--devices", type=int, help="override the population size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help=f"IDX files (default ${data.DATA_ENV} "
                        "or ../shared/data)")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results"))
    parser.add_argument("--save-state", action="store_true",
                        help="also save the trained population as <out>/ff_<experiment>.npz "
                        "(a teacher for scripts/distill_benchmarks.py --teacher-state)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a learner-config field (ff.FFConfig), e.g. "
                        "--set weight_decay=0.002; repeatable")
    parser.add_argument("--matmul-dtype", choices=devices.MATMUL_DTYPES, default="float32",
                        help="operand precision of the crossbar and request products "
                        "(DeviceSpec.matmul_dtype; bfloat16: what accelerators' matrix units "
                        "compute fast), to measure its effect on accuracy")
    parser.add_argument("--cells", type=int, default=1,
                        help="conductance cells per synapse (SynapseSpec.cells: the weight is "
                        "their mean, each write goes to one of them), e.g. --cells 4 --tag "
                        "cells4")
    parser.add_argument("--input-bound", type=float, default=None, metavar="X",
                        help="the DAC's full scale in digital units (ReadSpec.input_bound, every "
                        "layer; rram: 4), a periphery setting: inputs beyond ±X are clipped, "
                        "and read noise and current bound scale with it, e.g. --input-bound 8")
    parser.add_argument("--overflow-cells", type=int, default=0, metavar="N",
                        help="with --cells: up to N further cells take, in the same write, "
                        "the pulses that the max_pulses clip cut (SynapseSpec.overflow_cells), "
                        "e.g. --cells 8 --overflow-cells 1")
    parser.add_argument("--checkpoint", action="store_true",
                        help="after every epoch, save the population and learner state as "
                        "<out>/ff_<experiment>[-<tag>].ckpt.npz (deleted when the run "
                        "completes), so that --resume can continue it after a crash")
    parser.add_argument("--resume", action="store_true",
                        help="continue each experiment from its checkpoint (the same flags "
                        "as the run it continues), skip those whose result is complete, start "
                        "the others; keeps checkpointing. The resumed run gives the same bits "
                        "as an uninterrupted one on the same machine")
    parser.add_argument("--stop-after", type=int, default=0, metavar="E",
                        help="with --checkpoint: stop each experiment after epoch E (to split a "
                        "long run over sessions; --resume continues it)")
    parser.add_argument("--tag", default="", help="suffix of the result file name "
                        "(ff_<experiment>-<tag>.json), to keep variants apart")
    args = parser.parse_args()
    args.overrides = parse_overrides(args.set, parser, reserved={"epochs": "--epochs"})
    args.checkpoint = args.checkpoint or args.resume
    if args.stop_after < 0 or (args.stop_after and not args.checkpoint):
        parser.error("--stop-after E: give E >= 1 with --checkpoint (or --resume), so that the "
                     "stopped run can be continued")
    for name in args.experiments:  # every combination is checked before hours of training
        try:
            build(EXPERIMENTS[name], args.epochs or EXPERIMENTS[name].epochs, args.overrides,
                  cells=args.cells, input_bound=args.input_bound,
                  overflow_cells=args.overflow_cells)
        except (TypeError, ValueError) as exc:
            parser.error(f"--set, --cells, --input-bound or --overflow-cells with {name}: "
                         f"{exc}")
    # every dataset is read (and MD5-checked) before the first experiment trains
    datasets = {d: data.load(d, args.data_dir)
                for d in dict.fromkeys(EXPERIMENTS[n].dataset for n in args.experiments)}
    rows, notes = [], []
    for name in args.experiments:
        r = run(name, EXPERIMENTS[name], datasets[EXPERIMENTS[name].dataset], args)
        if not r["complete"]:  # stopped by --stop-after: no test error yet
            continue
        sm = r["summary"]
        if "test_goodness_agreement_median" in sm:
            notes.append(f"{name}: top-1 agreement between two of its devices (goodness "
                         f"readout, test images): median "
                         f"{100 * sm['test_goodness_agreement_median']:.2f}%, min "
                         f"{100 * sm['test_goodness_agreement_min']:.2f}%, max "
                         f"{100 * sm['test_goodness_agreement_max']:.2f}%")
        rows.append((name, r["preset"], r["n_devices"], r["epochs"],
                     100 * sm["test_goodness_error_median"], 100 * sm["test_goodness_error_min"],
                     100 * sm["test_goodness_error_max"], 100 * sm["test_softmax_error_median"],
                     sm["train_seconds"], r["target"]))
    if not rows:
        return
    header = ("experiment", "preset", "P", "epochs", "good.err% med", "min", "max",
              "softmax err% med", "train s", "target")
    widths = [max(len(str(h)), *(len(f"{v:.2f}" if isinstance(v, float) else str(v))
                                 for v in col)) for h, col in zip(header, zip(*rows,
                                                                              strict=True),
                                                                  strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    print(fmt.format(*header))
    for row in rows:
        print(fmt.format(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row)))
    for note in notes:
        print(note)


if __name__ == "__main__":
    run_script(main)
