"""Draw the figures of a ``scripts/bench.py`` result: one PNG of four panels.

* **Throughput**: device-samples per second of the FF epoch slice against the population size P,
  one line per hidden width and program (``map`` solid, ``vmap`` dashed), ``rram`` points at
  784-1000-1000-1000.
* **Arithmetic rate**: the same rows as a percentage of the FF-shaped matrix-multiply rate
  measured in the same run, with the 75 % target.
* **Scaling**: cost per device-sample at P over that at P = 1, with the 1.05 × target (and
  the paired calls' ratio, where the run has them).
* **Costs against an ``ideal`` step** (784-1000-1000-1000, P = 1, per device-sample): ``rram``
  (the paired median, quartiles as error bars, and the P = 16 row), ``rram`` with several cells,
  a distillation step with one student, evaluation (the goodness readout over all labels), with
  the 1.3 × ``rram`` target.

Everything drawn is computed from the JSON's rows with ``bench.summarise`` (the same numbers as
its ``summary``), so an interrupted run (rows without a summary) draws too.

Reproduce the committed figure::

    python scripts/plot_bench.py scripts/results/session46/bench_full_b988248.json \
        --out docs/figures/bench_session46.png
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from _entry import run_script  # noqa: E402

TARGETS = {"fraction_of_matmul": 0.75, "per_device_cost": 1.05, "rram_over_ideal": 1.3}


class BenchFileError(ValueError):
    """The file given is not a readable ``bench.py`` result."""


def load(path: Path) -> dict[str, Any]:
    """A ``bench.py`` result: the JSON payload, checked to have its rows and reference matmul."""
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchFileError(f"{path}: no such file; give the JSON that scripts/bench.py "
                             f"wrote (its --out)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchFileError(f"{path}: not readable as JSON ({exc}); give the JSON that "
                             f"scripts/bench.py wrote") from None
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if (not isinstance(rows, list) or len(rows) < 2
            or any(not isinstance(r, dict) or r.get("section") != "matmul" for r in rows[:2])):
        raise BenchFileError(f"{path}: not a scripts/bench.py result (it needs 'rows' starting "
                             f"with the two matmul rows)")
    return payload


def series(payload: dict[str, Any]) -> dict[str, Any]:
    """What the figure draws, as plain numbers.

    Returns ``throughput``, ``fraction`` and ``scaling``: ``{(width, program): (P list, values)}``
    of the ``ideal`` rows (device-samples/s; fraction of the FF-shaped matmul rate; cost per
    device-sample at P over P = 1); ``rram_points``: ``{label: (P list, device-samples/s)}``;
    ``costs``: ``[(label, ratio, (q1, q3) or None)]`` against an ``ideal`` step at P = 1;
    ``summary``: ``bench.summarise`` of the rows; ``matmul``: the two reference rates, GFLOP/s.
    """
    import bench

    rows = payload["rows"]
    mm = rows[0]["gflops"]
    throughput: dict[tuple[int, str], tuple[list[int], list[float]]] = {}
    fraction: dict[tuple[int, str], tuple[list[int], list[float]]] = {}
    scaling: dict[tuple[int, str], tuple[list[int], list[float]]] = {}
    ideal = [r for r in rows if r["section"] == "ff" and r.get("preset") == "ideal"
             and not r.get("skipped")]
    for r in sorted(ideal, key=lambda r: r["P"]):
        width = int(r["widths"].split("-")[1])
        k = (width, r["program"])
        throughput.setdefault(k, ([], []))
        fraction.setdefault(k, ([], []))
        throughput[k][0].append(r["P"])
        throughput[k][1].append(r["device_samples_per_s"])
        fraction[k][0].append(r["P"])
        fraction[k][1].append(r["gflops"] / mm)
    for k, (ps, rates) in throughput.items():
        if ps and ps[0] == 1:
            scaling[k] = (ps, [rates[0] / rate for rate in rates])
    rram_points: dict[str, tuple[list[int], list[float]]] = {}
    for r in rows:
        if r["section"] == "ff" and r.get("preset") == "rram" and not r.get("skipped"):
            label = bench.preset_label(r)
            ps, rates = rram_points.setdefault(label, ([], []))
            ps.append(r["P"])
            rates.append(r["device_samples_per_s"])
    ref = next((r for r in rows if r["section"] == "ff" and r.get("preset") == "ideal"
                and r.get("P") == 1 and r.get("program") == "map" and not r.get("skipped")
                and r["widths"].startswith("784-1000-")), None)
    width = 1000 if ref else int(next(r for r in rows if r["section"] == "ff")["widths"]
                                 .split("-")[1])
    summary = bench.summarise(rows, width)
    costs: list[tuple[str, float, tuple[float, float] | None]] = []
    paired = "rram_over_ideal_paired" in summary
    if paired:
        q1, q3 = summary["rram_over_ideal_paired_quartiles"]
        costs.append(("rram,\nP = 1 (paired)", summary["rram_over_ideal_paired"], (q1, q3)))
    if ref is not None:
        for label, (ps, rates) in rram_points.items():
            for p, rate in zip(ps, rates, strict=True):
                if label == "rram" and p == 1 and paired:
                    continue  # the paired figure stands for it
                costs.append((f"{label},\nP = {p}", ref["device_samples_per_s"] / rate, None))
    if "distill_over_ff_time_P1" in summary:
        costs.append(("distill,\n1 student", summary["distill_over_ff_time_P1"], None))
    if "eval_over_train_per_sample" in summary:
        costs.append(("evaluation\n(all labels)", summary["eval_over_train_per_sample"], None))
    return {"throughput": throughput, "fraction": fraction, "scaling": scaling,
            "rram_points": rram_points, "costs": costs, "summary": summary,
            "matmul": (mm, rows[1]["gflops"])}


def plot(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """Write the four-panel PNG of ``payload`` (a ``bench.py`` result) to ``path``, atomically
    (a ``.part`` file renamed when complete). Returns the ``series`` it drew."""
    from mortal.plots import pyplot, save_figure

    plt = pyplot()
    s = series(payload)
    env = payload.get("environment", {})
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), dpi=110)
    palette = plt.get_cmap("tab10")
    widths = sorted({w for w, _ in s["throughput"]})
    color = {w: palette(i) for i, w in enumerate(widths)}
    style = {"map": "-", "vmap": "--"}

    def lines(ax: Any, data: dict[tuple[int, str], tuple[list[int], list[float]]],
              scale: float = 1.0) -> None:
        for (w, program), (ps, values) in sorted(data.items()):
            ax.plot(ps, [scale * v for v in values], style.get(program, ":"), marker="o",
                    color=color[w], label=f"ideal 784-{w}-{w}-{w}, {program}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("population size P (devices)")
        ax.grid(alpha=0.3, which="both")

    ax = axes[0, 0]
    lines(ax, s["throughput"])
    markers = iter("s^vD<>")
    for label, (ps, rates) in s["rram_points"].items():
        ax.plot(ps, rates, next(markers, "x"), color="black", ls="none",
                label=f"{label} 784-1000-1000-1000, map")
    ax.set_yscale("log")
    ax.set_ylabel("device-samples / s (whole population)")
    ax.set_title("FF training throughput")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    lines(ax, s["fraction"], 100.0)
    ax.axhline(100 * TARGETS["fraction_of_matmul"], color="red", lw=1, ls=":",
               label="target: 75 % (ideal 3 × 1000, P = 1)")
    paired = s["summary"].get("ideal_P1_paired_fraction_of_matmul")
    if paired is not None:
        ax.plot([1], [100 * paired], "*", ms=12, color="black",
                label="ideal 3 × 1000, P = 1: median of the paired calls")
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"% of the FF-shaped matmul rate ({s['matmul'][0]:.0f} GFLOP/s)")
    ax.set_title("achieved arithmetic rate")
    ax.legend(fontsize=7)

    ax = axes[1, 0]
    lines(ax, s["scaling"])
    for key, value in s["summary"].items():
        paired_key = re.fullmatch(r"per_device_cost_P(\d+)_over_P1_paired", key)
        if paired_key:
            p = int(paired_key.group(1))
            q1, q3 = s["summary"][key + "_quartiles"]
            ax.errorbar([p], [value], yerr=[[value - q1], [q3 - value]], fmt="*", ms=12,
                        color="black", capsize=4,
                        label=f"ideal 3 × 1000, P = {p} / P = 1: paired calls (quartiles)")
    ax.axhline(TARGETS["per_device_cost"], color="red", lw=1, ls=":",
               label="target: 1.05 × at P = 16")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel("cost per device-sample at P / at P = 1")
    ax.set_title("population scaling")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    labels = [c[0] for c in s["costs"]]
    values = [c[1] for c in s["costs"]]
    bars = ax.bar(range(len(values)), values, color=palette(3))
    for i, (_, v, quartiles) in enumerate(s["costs"]):
        if quartiles is not None:
            ax.errorbar([i], [v], yerr=[[v - quartiles[0]], [quartiles[1] - v]], color="black",
                        capsize=4, label="quartiles of the paired calls")
    for b, v in zip(bars, values, strict=True):
        ax.annotate(f"{v:.2f} ×", (b.get_x() + b.get_width() / 2, v), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.axhline(TARGETS["rram_over_ideal"], color="red", lw=1, ls=":",
               label="target: rram ≤ 1.3 × ideal")
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("time per device-sample / ideal P = 1 row's")
    ax.set_title("costs against an ideal training step (784-1000-1000-1000)")
    ax.legend(fontsize=7)

    rev = str(env.get("git_revision", "?"))[:7]
    fig.suptitle(f"scripts/bench.py at {rev}, {env.get('timestamp_utc', '?')[:10]}: "
                 f"{env.get('cpu_model', '?')}, {env.get('cpu_count', '?')} cores, "
                 f"{env.get('jax_backend', '?')}; matmul {s['matmul'][0]:.0f} GFLOP/s "
                 f"(FF-shaped), {s['matmul'][1]:.0f} GFLOP/s (2000³)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, path)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", type=Path, help="the JSON written by scripts/bench.py")
    ap.add_argument("--out", type=Path, default=None,
                    help="the PNG to write (default: the result's path with .png)")
    args = ap.parse_args()
    try:
        payload = load(args.result)
    except BenchFileError as exc:
        sys.exit(f"plot_bench.py: {exc}")
    out = args.out or args.result.with_suffix(".png")
    if out.suffix.lower() != ".png":
        sys.exit(f"plot_bench.py: --out {out} must end in .png (the figure is a PNG)")
    summary = plot(payload, out)["summary"]
    print(f"wrote {out}")
    for key in ("ideal_P1_map_fraction_of_matmul", "ideal_P1_paired_fraction_of_matmul",
                "per_device_cost_P16_over_P1_map", "per_device_cost_P16_over_P1_paired",
                "rram_over_ideal_paired", "distill_over_ff_time_P1", "eval_over_train_per_sample"):
        value = summary.get(key)
        if value is not None and math.isfinite(value):
            print(f"  {key:<36} {value:.3f}")
    return 0


if __name__ == "__main__":
    run_script(main)
