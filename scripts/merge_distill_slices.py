"""Join the one-to-many rows of ``distill_benchmarks.py --student-slice`` runs into one row.

A slice run trains students ``FIRST..LAST-1`` of a ``--students N`` run with the same bits as the
whole run (``distill_benchmarks._distill``) on the same kind of CPU and XLA flags, so slices made
on other days add up to the N-student row the issue asks for. This script checks that the slices
belong to one run (every setting, the XLA flags and CPU, the teacher's reads, the seed equal), that
they cover students 0..N-1 once each, and writes the whole row: per-student lists concatenated in
student order, means over all N, each slice's revision, time and command kept under ``parts``. The
control arms are kept only if every slice has them.

  python scripts/merge_distill_slices.py a.json b.json ... --out whole.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import write_json
from _rows import spelled_out

ROW = "one-to-many"
PER_STUDENT = ("student_error", "agreement", "kl", "fitted_temperature",
               "kl_at_fitted_temperature", "agreement_with_consensus")
CONTROLS = ("hard_label_error", "hard_label_agreement", "weight_copy_error")
# how the label arm learned: shared by the slices that have control arms
CONTROL_SETTINGS = ("hard_label_negatives", "hard_label_negative_belief")
MEANS = {"mean_student_error": "student_error", "mean_agreement": "agreement",
         "mean_agreement_with_consensus": "agreement_with_consensus",
         "mean_hard_label_error": "hard_label_error",
         "mean_hard_label_agreement": "hard_label_agreement",
         "mean_weight_copy_error": "weight_copy_error"}
PER_SLICE = ("student_slice", "elapsed_s", "git_revision", "controls_revision", "command",
             "history", "controls", "controls_elapsed_s", "controls_command")


class SliceError(ValueError):
    """Slices that do not make one run (the message says which and why)."""


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _history(parts: list[tuple[int, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Per epoch: lists (each watched student's error and agreement) concatenated, training
    metrics (means over a slice's students) averaged with the slices' sizes as weights, and
    ``epoch_s`` summed (the time all slices together spent on the epoch)."""
    epochs = {len(h) for _, h in parts}
    if len(epochs) != 1:
        raise SliceError(f"the slices' histories have different lengths {sorted(epochs)}")
    total = sum(size for size, _ in parts)
    merged = []
    for rows in zip(*(h for _, h in parts), strict=True):
        keys = {tuple(sorted(r)) for r in rows}
        if len(keys) != 1 or len({r["epoch"] for r in rows}) != 1:
            raise SliceError(f"epoch {rows[0]['epoch']}: the slices logged different things")
        out: dict[str, Any] = {"epoch": rows[0]["epoch"]}
        for k in rows[0]:
            if k == "epoch":
                continue
            if k == "epoch_s":
                out[k] = round(sum(r[k] for r in rows), 2)
            elif isinstance(rows[0][k], list):
                out[k] = [v for r in rows for v in r[k]]
            else:
                out[k] = sum(size * r[k] for (size, _), r in zip(parts, rows, strict=True)) / total
        merged.append(out)
    return merged


def merge_rows(rows: list[dict[str, Any]], names: list[str] | None = None) -> dict[str, Any]:
    """The whole run's one-to-many row from its slices' rows (any order). ``names`` (the files)
    only label the errors. Raises ``SliceError`` when the slices are not one run."""
    names = names or [f"slice {i}" for i in range(len(rows))]
    if not rows:
        raise SliceError("no slices given")
    for name, row in zip(names, rows, strict=True):
        if row.get("student_slice") is None:
            raise SliceError(f"{name}: not a --student-slice run (its row has no student_slice)")
        if row.get("controls") == "pending":
            raise SliceError(f"{name}: its control arms were still training when it was written; "
                             f"let the run finish, or re-run that slice")
    order = sorted(range(len(rows)), key=lambda i: tuple(rows[i]["student_slice"]))
    rows, names = [rows[i] for i in order], [names[i] for i in order]
    # one run first (a slice of another --students is a setting that differs), then coverage
    with_controls = all(all(k in row for k in CONTROLS) for row in rows)
    rows = [spelled_out(row) for row in rows]  # what older slices did not record yet
    own = {*PER_SLICE, *PER_STUDENT, *CONTROLS, *MEANS,
           *(() if with_controls else CONTROL_SETTINGS)}
    shared = set(rows[0]) - own
    for name, row in zip(names[1:], rows[1:], strict=True):
        keys = set(row) - own
        for k in sorted(shared | keys):
            if row.get(k) != rows[0].get(k):
                raise SliceError(f"{name}: {k} = {row.get(k)!r}, but {names[0]} has "
                                 f"{rows[0].get(k)!r}; slices of one run share every setting")
    n = rows[0]["students"]
    end, previous = 0, ""
    for name, row in zip(names, rows, strict=True):
        first, last = row["student_slice"]
        if first > end:
            raise SliceError(f"students {end}..{first - 1} of {n} are missing (the next "
                             f"slice, {name}, starts at {first})")
        if first < end:
            raise SliceError(f"{name}: students {first}..{min(end, last) - 1} are also in "
                             f"{previous}; give each student once")
        end, previous = last, name
    if end != n:
        raise SliceError(f"students {end}..{n - 1} of {n} are missing")
    merged: dict[str, Any] = {k: rows[0][k] for k in sorted(shared)}
    for k in PER_STUDENT + (CONTROLS if with_controls else ()):
        merged[k] = [v for row in rows for v in row[k]]
    for mean, of in MEANS.items():
        if of in merged:
            merged[mean] = _mean(merged[of])
    if all("history" in row for row in rows):
        merged["history"] = _history([(row["student_slice"][1] - row["student_slice"][0],
                                       row["history"]) for row in rows])
    merged["elapsed_s"] = round(sum(row["elapsed_s"] for row in rows), 1)
    merged["student_slice"] = None
    merged["parts"] = [{"file": name, **{k: row[k] for k in PER_SLICE if k in row
                                         and k != "history"}}
                       for name, row in zip(names, rows, strict=True)]
    revisions = sorted({row["git_revision"] for row in rows})
    merged["git_revision"] = revisions[0] if len(revisions) == 1 else revisions
    if not with_controls:
        merged["controls"] = "not in every slice"
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slices", nargs="+", help="JSON files written by distill_benchmarks.py "
                        "--student-slice (their one-to-many rows)")
    parser.add_argument("--out", required=True, help="the JSON file of the whole row")
    args = parser.parse_args()
    rows, datasets = [], set()
    for f in args.slices:
        try:
            whole = json.loads(Path(f).read_text())
            rows.append(whole[ROW])
            datasets.add(json.dumps(whole.get("dataset"), sort_keys=True))
        except (OSError, ValueError) as exc:
            parser.error(f"{f}: not a readable JSON file ({exc})")
        except (KeyError, TypeError):
            parser.error(f"{f}: has no {ROW!r} row (written by distill_benchmarks.py "
                         f"--experiments one-to-many --student-slice?)")
    if len(datasets) > 1:
        parser.error("the slices were run on different datasets; slices of one run share it")
    try:
        row = merge_rows(rows, args.slices)
    except SliceError as exc:
        parser.error(str(exc))
    if isinstance(row["git_revision"], list):
        print(f"note: the slices ran at revisions {', '.join(row['git_revision'])}; they add up "
              f"to the whole run only if its code did not change between them", file=sys.stderr)
    dataset = json.loads(datasets.pop())
    write_json(Path(args.out), {"dataset": dataset, ROW: row})
    print(f"{len(rows)} slices, {row['students']} students: mean error "
          f"{100 * row['mean_student_error']:.2f}% (teacher {100 * row['teacher_error']:.2f}%), "
          f"agreement {100 * row['mean_agreement']:.2f}%"
          + (f"; hard labels {100 * row['mean_hard_label_error']:.2f}%, weight copy "
             f"{100 * row['mean_weight_copy_error']:.2f}%" if "mean_hard_label_error" in row
             else "; no control arms in every slice"))
    print("per student: " + " ".join(f"{100 * e:.2f}" for e in row["student_error"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
