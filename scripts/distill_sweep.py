"""How the students' sampling settings move distillation fidelity: a short sweep over the
positive temperature τ and the number of teacher reads R averaged per step. JSON + a table.

Every setting trains the same S fresh students (``rram`` unless ``--student-preset``; same fab
seeds, same data order) from the same ``rram`` teacher for E epochs on the unlabelled training
images; alongside, the same students trained from hard labels for the same budget. Short budgets
rank settings; they do not give the issue's figures (``scripts/distill_benchmarks.py`` does).

Reproduce: ``python scripts/distill_sweep.py --dataset mnist --teacher-state
scripts/results/ff_mnist-rram.npz --students 2 --epochs 2 --grid 1:1 0.25:1 1:4 0.25:4``.
Results: ``scripts/results/distill_sweep_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import distill_benchmarks as bench
from _entry import run_script
from _record import write_json
from _revision import git_revision

import distill
from mortal import data, ff
from mortal.xla_cpu import xla_flags


def _setting(text: str) -> tuple[float, int]:
    try:
        tau, reads = text.split(":")
        return float(tau), int(reads)
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid entry {text!r}: write τ:R, e.g. 0.25:4") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(bench.SETUPS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--students", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--grid", nargs="*", type=_setting, default=[(1.0, 1), (0.25, 1)],
                        help="settings τ:R (positive temperature : teacher reads per step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-state", default=None)
    parser.add_argument("--student-preset", default="rram", choices=["rram", "pcm", "ideal"],
                        help="the students' recipe (the teacher is the rram device)")
    parser.add_argument("--no-hard", action="store_true", help="skip the hard-label arm")
    parser.add_argument("--out", default=str(bench.ROOT / "scripts" / "results"))
    args = parser.parse_args()

    widths, cfg_kw, gain = bench.SETUPS[args.dataset]
    ds = data.load(args.dataset, args.data_dir)
    cfg = ff.FFConfig(epochs=args.epochs, n_classes=ds.n_classes, **cfg_kw)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    xt, yt = jnp.asarray(ds.x_test), np.asarray(ds.y_test)
    rram = bench._spec("rram", widths, gain)
    student_spec = bench._spec(args.student_preset, widths, gain)
    s, t, n = args.seed, args.temperature, args.students
    if args.teacher_state:
        teacher = jax.tree.map(lambda a: a[:1], bench.load_state(args.teacher_state)[0])
    else:
        teacher = bench._train_ff(rram, 1, x, y, dataclasses.replace(cfg, epochs=40), s)
    t_scores = np.stack([bench._scores(teacher, xt, cfg, s + 2 + 1000 * r)[0] for r in range(5)])
    out = Path(args.out) / f"distill_sweep_{args.dataset}.json"
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    # how wrong the labels the students learn from are: the teacher on 10,000 training images
    n_train = min(10_000, x.shape[0])
    train_scores = bench._scores(teacher, x[:n_train], cfg, s + 5)[0]
    results["teacher_train_error"] = {
        "error": float(np.mean(train_scores.argmax(-1) != np.asarray(y[:n_train]))),
        "images": int(n_train), "teacher_state": args.teacher_state}
    rows = results.setdefault("rows", {})

    def save() -> None:
        write_json(out, results)

    common = {"epochs": args.epochs, "students": n, "temperature": t, "seed": s,
              "student_preset": args.student_preset,
              "teacher_state": args.teacher_state,
              "command": " ".join([sys.executable, *sys.argv]),
              "git_revision": git_revision(bench.ROOT), "xla_flags": xla_flags()}
    suffix = "" if args.student_preset == "rram" else f"{args.student_preset} students "
    for tau, reads in args.grid:
        started = time.perf_counter()
        dcfg = distill.DistillConfig(temperature=t, positive_temperature=tau,
                                     teacher_reads=reads)
        students, _ = bench._distill(teacher, student_spec, n, x, cfg, dcfg, s + 100)
        row = bench._report(t_scores, bench._scores(students, xt, cfg, s + 3), yt, t,
                            ds.n_classes)
        row.update(common, positive_temperature=tau, teacher_reads=reads,
                   elapsed_s=round(time.perf_counter() - started, 1))
        rows[f"{suffix}tau={tau:g} reads={reads} epochs={args.epochs} students={n}"] = row
        save()
        print(f"τ={tau:g} R={reads}: student error {100 * row['mean_student_error']:.2f}%, "
              f"agreement {100 * row['mean_agreement']:.1f}% "
              f"({row['elapsed_s']:.0f} s)", flush=True)
    if not args.no_hard:
        started = time.perf_counter()
        hard = bench._train_ff(student_spec, n, x, y, cfg, s + 100)
        err = bench._errors(hard, xt, yt, cfg, s + 4)
        results.setdefault("hard_labels", {})[f"{suffix}epochs={args.epochs} students={n}"] = {
            "student_error": err, "mean_student_error": float(np.mean(err)), **common,
            "elapsed_s": round(time.perf_counter() - started, 1)}
        save()
    save()
    print(f"teacher error on {n_train} training images: "
          f"{100 * results['teacher_train_error']['error']:.2f}%")
    print(f"{'setting':<48}  {'error %':>8}  {'agree %':>8}  {'vs consensus %':>14}")
    for name, r in rows.items():
        print(f"{name:<48}  {100 * r['mean_student_error']:8.2f}  {100 * r['mean_agreement']:8.1f}"
              f"  {100 * r['mean_agreement_with_consensus']:14.1f}")
    for name, r in results.get("hard_labels", {}).items():
        print(f"{'hard labels ' + name:<48}  {100 * r['mean_student_error']:8.2f}")


if __name__ == "__main__":
    run_script(main)
