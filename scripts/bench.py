"""Speed and scale of population training (issue: speed and scale). JSON + a table.

Sections (each row says what was timed and how many matrix FLOPs it contains):

* ``matmul``: this machine's float32 matrix-multiply rate, measured in the same run: jitted
  ``x @ w`` products of the shapes an FF step multiplies (B×1001 · 1001×1000) and square 2000³
  products, 10 different ``x`` per call (``lax.map``), median of at least 20 calls. With
  ``--matmul-dtype bfloat16`` every device's crossbar and request products round their operands
  to bfloat16 (``DeviceSpec.matmul_dtype``) and the matmul rows are bfloat16 products (float32
  accumulation) too, so the fractions compare like with like.
* ``ff``: one FF training epoch slice (``--steps`` minibatches of B = 100 in one ``lax.scan``)
  of a population of P devices, for presets × widths (784 inputs, three hidden layers of the
  width) × P. Two population programs: ``map`` (``lax.map`` over devices: what the command line
  runs, bit-identical under any sharding) and ``vmap``. Reported: device-samples per second
  (``P · steps · B / t``), seconds per MNIST epoch (50,000 images) per device, achieved GFLOP/s
  and its fraction of the measured matmul rate, and memory per device (bytes of the learner
  state: device state and physics, optimiser, records, readout).
  Matrix FLOPs per step and device: three measured passes (neutral, positive, negative) and two
  outer-product weight requests (positive, negative) per layer, ``5 · 2·B·Σ(n_in+1)·n_out``, plus
  the readout (forward and delta rule, ``2 · 2·B·(F+1)·C``).
  With ``--cells N``, the ``rram`` rows are repeated with N conductance cells per synapse
  (``SynapseSpec.cells``; preset shown as ``rramxN``) at the same populations; with
  ``--overflow-cells K`` as well, again with K overflow cells (``SynapseSpec.overflow_cells``;
  shown as ``rramxN+K``).
* ``paired`` (with the ``rram`` section): the ``rram`` / ``ideal`` time ratio at P = 1 from
  ``--pairs`` rounds of neighbouring calls, one of each in alternating order (median and
  quartiles of the per-round ratios): steadier on a shared machine than the ratio of the two
  ``ff`` rows, whose medians are timed minutes apart.
* ``scaling`` (with the ``ff`` section, when ``--pairs`` > 0): the per-device cost of
  ``ideal`` at P = 16 (P = 4 with ``--quick``) over P = 1, ``map``, from ``--pairs`` rounds of
  neighbouring calls, one of each in alternating order: ``(t_P / P) / t_1`` per round, median
  and quartiles. The P = 1 row (3 calls) moved by ±15 % between minutes on our VM, and the
  scaling target divides by it.
* ``distill``: one distillation epoch slice (one teacher → P students, same steps): the teacher
  scores every minibatch over all C labels (C passes) before the students learn.
* ``eval``: evaluation (goodness over all C labels + the softmax readout) of N images, per
  device-sample, against a training step per device-sample.

Targets (issue): CPU ``ideal`` 784-1000-1000-1000 epoch at ≥ 75 % of the measured matmul rate;
per-device cost at P = 16 ≤ 1.05 × P = 1; ``rram`` ≤ 1.3 × ``ideal``.

Reproduce: ``python scripts/bench.py`` (about 15 minutes on 2 CPU cores);
``python scripts/bench.py --quick`` (a minute). Results: ``scripts/results/bench.json``.
Rows whose state would not fit in ``--max-gb`` of memory are skipped and listed as such.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _entry import run_script  # noqa: E402
from bench_devices import environment, tree_nbytes, write_json_atomic  # noqa: E402

import devices  # noqa: E402
import distill  # noqa: E402
from mortal import ff, parallel  # noqa: E402

B, C = 100, 10
MATMUL_DTYPE = "float32"  # set from --matmul-dtype: the devices' DeviceSpec.matmul_dtype


def timed(fn: Any, *args: Any, repeats: int) -> tuple[float, list[float]]:
    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times), times


MATMULS_PER_CALL = 10  # products per timed call, as an FF slice times 10 steps per call


def matmul_rate(repeats: int) -> list[dict[str, Any]]:
    """The machine's matmul rate: one jitted call forms ``MATMULS_PER_CALL`` products of one
    weight matrix with as many different inputs (``lax.map``, like the steps of an FF slice),
    median of at least 20 calls. (Until session 14 one call formed one product: for the
    FF-shaped product, about 1 ms, the per-call overhead and scheduling then moved the figure
    by nearly 2 × between runs: 336 and 187 GFLOP/s.)"""
    rows = []
    for m, k, n in ((B, 1001, 1000), (2000, 2000, 2000)):
        xs = jax.random.normal(jax.random.key(0), (MATMULS_PER_CALL, m, k))
        w = jax.random.normal(jax.random.key(1), (k, n))
        f = jax.jit(lambda a, b: jax.lax.map(lambda x: devices.matmul(x, b, MATMUL_DTYPE), a))
        t, _ = timed(f, xs, w, repeats=max(repeats, 20))
        rows.append({"section": "matmul", "shape": f"{m}x{k} @ {k}x{n}",
                     "seconds": t / MATMULS_PER_CALL, "products_per_call": MATMULS_PER_CALL,
                     "gflops": 2 * m * k * n * MATMULS_PER_CALL / t / 1e9,
                     "matmul_dtype": MATMUL_DTYPE})
    return rows


def crossbar_size(widths: tuple[int, ...]) -> int:
    """Σ (n_in + 1) · n_out: multiply-adds of one sample through every layer."""
    return sum((a + 1) * b for a, b in itertools.pairwise(widths))


def step_flops(widths: tuple[int, ...], readout_from: int = 1) -> float:
    layers = crossbar_size(widths)
    feats = sum(widths[1 + readout_from:])
    return 5 * 2 * B * layers + 2 * 2 * B * (feats + 1) * C


def eval_flops(widths: tuple[int, ...], n: int) -> float:
    layers = crossbar_size(widths)
    return (C + 1) * 2 * n * layers


def _data(steps: int, n_in: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (steps * B, n_in)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, C, steps * B).astype(np.int32))
    return x, y


def _population(preset: str, widths: tuple[int, ...], p: int, cfg: ff.FFConfig, steps: int,
                cells: int = 1, overflow: int = 0) -> ff.FFState:
    spec = devices.preset(preset, widths).replace(matmul_dtype=MATMUL_DTYPE)
    if cells != 1:
        spec = spec.replace_in_layers("synapse", cells=cells, overflow_cells=overflow)
    pop = devices.spawn(spec, p, jax.random.key(0))
    return ff.init_population(pop, cfg, steps)


def _ff_slice(preset: str, widths: tuple[int, ...], p: int, steps: int, program: str,
              cells: int = 1, overflow: int = 0) -> tuple[Any, list[Any], float]:
    """A timed FF slice: ``(fn, held, MB per device)``; each ``fn()`` call trains the population
    in ``held[0]`` for ``steps`` minibatches and continues from the last call's states."""
    cfg = ff.FFConfig(epochs=10)
    state = _population(preset, widths, p, cfg, steps, cells, overflow)
    x, y = _data(steps, 784)
    keys, order = ff.epoch_keys(jax.random.key(1), 0, p, cfg)
    held = [state]  # each call continues from the last one's states, as in training

    def fn() -> Any:
        if program == "vmap":
            held[0], m = ff.population_epoch(held[0], x, y, keys, order, cfg=cfg,
                                             bench=ff.BENCH)
        else:  # the command line's program: lax.map over devices, states donated
            held[0], m = parallel.population_epoch(held[0], x, y, keys, order, cfg=cfg,
                                                   bench=ff.BENCH, mesh=None)
        return held[0], m

    mb = tree_nbytes(state) / p / 2**20
    return fn, held, mb


def bench_ff(preset: str, width: int, p: int, steps: int, repeats: int, program: str,
             cells: int = 1, overflow: int = 0) -> dict[str, Any]:
    widths = (784, width, width, width)
    fn, held, mb = _ff_slice(preset, widths, p, steps, program, cells, overflow)
    t, times = timed(fn, repeats=repeats)
    flops = p * steps * step_flops(widths)
    row = {"section": "ff", "preset": preset, "widths": "-".join(map(str, widths)), "P": p,
           "program": program, "steps": steps, "seconds": t, "times": times,
           "device_samples_per_s": p * steps * B / t,
           "mnist_epoch_s_per_device": 50_000 / (p * steps * B / t),
           "gflops": flops / t / 1e9, "mb_per_device": mb, "cells": cells}
    if overflow:
        row["overflow_cells"] = overflow
    held.clear()
    gc.collect()
    return row


def _alternating_calls(slices: dict[Any, tuple[Any, list[Any], float]], pairs: int
                       ) -> dict[Any, list[float]]:
    """Seconds of each of two FF slices (``_ff_slice``) over ``pairs`` rounds of one call each,
    in alternating order, after a compiling call of each; the slices' states are released
    afterwards. On a shared machine whose speed drifts by ±25 % between minutes, a ratio of
    neighbouring calls is steadier than a ratio of medians taken minutes apart."""
    first, second = slices
    for fn, _, _ in slices.values():  # compile and warm up
        jax.block_until_ready(fn())
    times: dict[Any, list[float]] = {first: [], second: []}
    for i in range(pairs):
        for key in (first, second) if i % 2 == 0 else (second, first):
            t = time.perf_counter()
            jax.block_until_ready(slices[key][0]())
            times[key].append(time.perf_counter() - t)
    for _, held, _ in slices.values():
        held.clear()
    gc.collect()
    return times


def _median_and_quartiles(ratios: list[float]) -> dict[str, float]:
    q1, med, q3 = (float(np.percentile(ratios, q)) for q in (25, 50, 75))
    return {"ratio_median": med, "ratio_q1": q1, "ratio_q3": q3}


def bench_paired(width: int, steps: int, pairs: int) -> dict[str, Any]:
    """``rram`` / ``ideal`` time of one device's FF slice (P = 1, ``map``) from paired calls
    (``_alternating_calls``): the median of the per-round ratios and their quartiles."""
    widths = (784, width, width, width)
    times = _alternating_calls(
        {name: _ff_slice(name, widths, 1, steps, "map") for name in ("ideal", "rram")}, pairs)
    ratios = [r / i for r, i in zip(times["rram"], times["ideal"], strict=True)]
    return {"section": "paired", "widths": "-".join(map(str, widths)), "P": 1, "steps": steps,
            "pairs": pairs, "ideal_ms_per_step": 1000 * statistics.median(times["ideal"]) / steps,
            "rram_ms_per_step": 1000 * statistics.median(times["rram"]) / steps,
            **_median_and_quartiles(ratios), "times": times}


def bench_scaling_paired(width: int, p: int, steps: int, pairs: int) -> dict[str, Any]:
    """Per-device cost of an ``ideal`` FF slice at P = ``p`` over P = 1 (``map``, the command
    line's program) from paired calls (``_alternating_calls``): per round ``(t_p / p) / t_1``;
    the median of those ratios and their quartiles."""
    widths = (784, width, width, width)
    times = _alternating_calls(
        {n: _ff_slice("ideal", widths, n, steps, "map") for n in (1, p)}, pairs)
    ratios = [tp / p / t1 for tp, t1 in zip(times[p], times[1], strict=True)]
    return {"section": "scaling", "widths": "-".join(map(str, widths)), "P": p, "steps": steps,
            "pairs": pairs, "P1_ms_per_step": 1000 * statistics.median(times[1]) / steps,
            "ms_per_device_step": 1000 * statistics.median(times[p]) / p / steps,
            **_median_and_quartiles(ratios), "times": {str(n): t for n, t in times.items()}}


def bench_distill(preset: str, width: int, p: int, steps: int, repeats: int) -> dict[str, Any]:
    widths = (784, width, width, width)
    cfg = ff.FFConfig(epochs=10)
    dcfg = distill.DistillConfig()
    teacher = _population(preset, widths, 1, cfg, steps)
    students = _population(preset, widths, p, distill.student_config(cfg, dcfg), steps)
    x, _ = _data(steps, 784)
    k = jax.random.key(3)
    skeys = jax.random.split(k, p)

    def local(s: ff.FFState, t: ff.FFState, xx: jax.Array, kk: jax.Array, sk: jax.Array
              ) -> Any:
        return distill.distill_epoch_fn(s, t, xx, None, kk, sk, cfg, dcfg, ff.BENCH, ff.BENCH,
                                        chunk=1)

    program = parallel.over_population(local, None, (True, False, False, False, True),
                                       donate=(0,))
    held = [students]

    def fn() -> Any:
        held[0], m = program(held[0], teacher, x, k, skeys)
        return held[0], m

    del students
    t, times = timed(fn, repeats=repeats)
    teacher_flops = steps * C * 2 * B * crossbar_size(widths)
    flops = p * steps * step_flops(widths) + teacher_flops
    return {"section": "distill", "preset": preset, "widths": "-".join(map(str, widths)),
            "P": p, "program": "map", "steps": steps, "seconds": t, "times": times,
            "device_samples_per_s": p * steps * B / t, "gflops": flops / t / 1e9}


def bench_eval(preset: str, width: int, p: int, n: int, repeats: int) -> dict[str, Any]:
    widths = (784, width, width, width)
    cfg = ff.FFConfig(epochs=10)
    state = _population(preset, widths, p, cfg, 1)
    x, y = _data(n // B, 784)
    keys = jax.random.split(jax.random.key(4), p)

    def fn(s: ff.FFState) -> Any:
        return parallel.evaluate(s, x, y, keys, cfg=cfg, chunk=500, bench=ff.BENCH, mesh=None)

    t, times = timed(fn, state, repeats=repeats)
    return {"section": "eval", "preset": preset, "widths": "-".join(map(str, widths)), "P": p,
            "program": "map", "images": n, "seconds": t, "times": times,
            "device_samples_per_s": p * n / t, "gflops": p * eval_flops(widths, n) / t / 1e9}


def estimated_gb(preset: str, width: int, p: int, cells: int = 1) -> float:
    params = 785 * width + 2 * (width + 1) * width
    # weights, records, optimiser, physics; with several cells, weights, offsets and the
    # per-synapse physics (about 6 arrays) have one copy per cell
    per = params * 4 * ((9 + 6 * (cells - 1)) if preset != "ideal" else 5)
    return 2.5 * p * per / 2**30  # input and output populations, temporaries


def preset_label(row: dict[str, Any]) -> str:
    """A row's preset as the table shows it: ``rram``, ``rramx8`` (8 cells per synapse),
    ``rramx8+1`` (and one overflow cell)."""
    return row["preset"] + (f"x{row['cells']}" if row.get("cells", 1) != 1 else "") + (
        f"+{row['overflow_cells']}" if row.get("overflow_cells") else "")


def table(rows: list[dict[str, Any]], matmul: float) -> str:
    head = (f"{'section':<8} {'preset':<6} {'widths':<16} {'P':>3} {'prog':<5} {'s/call':>8} "
            f"{'dev-samples/s':>13} {'GFLOP/s':>8} {'% matmul':>8} {'MB/dev':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["section"] == "matmul":
            lines.append(f"{'matmul':<8} {'':<6} {r['shape']:<16} {'':>3} {'':<5} "
                         f"{r['seconds']:>8.4f} {'':>13} {r['gflops']:>8.1f} {'':>8} {'':>7}")
            continue
        if r["section"] == "scaling":
            lines.append(f"{'scaling':<8} {'ideal':<6} {r['widths']:<16} {r['P']:>3} "
                         f"{'map':<5} per-device cost over P = 1 {r['ratio_median']:.3f} "
                         f"(quartiles {r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}) of {r['pairs']} "
                         f"pairs: {r['ms_per_device_step']:.1f} / {r['P1_ms_per_step']:.1f} "
                         f"ms/step")
            continue
        if r["section"] == "paired":
            lines.append(f"{'paired':<8} {'rram/':<6} {r['widths']:<16} {r['P']:>3} "
                         f"{'ideal':<5} ratio {r['ratio_median']:.3f} (quartiles "
                         f"{r['ratio_q1']:.3f}-{r['ratio_q3']:.3f}) of {r['pairs']} pairs: "
                         f"{r['rram_ms_per_step']:.1f} / {r['ideal_ms_per_step']:.1f} ms/step")
            continue
        preset = preset_label(r)
        if r.get("skipped"):
            lines.append(f"{r['section']:<8} {preset:<6} {r['widths']:<16} {r['P']:>3} "
                         f"skipped: {r['skipped']}")
            continue
        mb = f"{r['mb_per_device']:.1f}" if "mb_per_device" in r else ""
        lines.append(f"{r['section']:<8} {preset:<6} {r['widths']:<16} {r['P']:>3} "
                     f"{r['program']:<5} {r['seconds']:>8.3f} "
                     f"{r['device_samples_per_s']:>13.0f} {r['gflops']:>8.1f} "
                     f"{100 * r['gflops'] / matmul:>7.1f}% {mb:>7}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a minute")
    ap.add_argument("--steps", type=int, default=10, help="minibatches per timed call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-gb", type=float, default=12.0)
    ap.add_argument("--pairs", type=int, default=15,
                    help="paired calls: rram/ideal in the rram section, P = 16 / P = 1 in the "
                    "ff section's scaling row (0: none)")
    ap.add_argument("--out", default=str(ROOT / "scripts" / "results" / "bench.json"))
    ap.add_argument("--only", choices=("ff", "rram", "distill", "eval"), action="append",
                    help="run only these sections (repeatable; 'rram' also times the ideal P = 1 "
                    "reference it is compared with)")
    ap.add_argument("--populations", type=int, nargs="+", default=None, metavar="P",
                    help="population sizes of the ff section (default 1 4 16 64; on a GPU "
                    "1 4 16 64 256; --quick: 1 4)")
    ap.add_argument("--widths", type=int, nargs="+", default=None, metavar="W",
                    help="hidden widths of the ff section (default 500 1000 2000; --quick: 500)")
    ap.add_argument("--cells", type=int, nargs="+", default=[], metavar="N",
                    help="the rram section also times devices with N conductance cells per "
                    "synapse (SynapseSpec.cells), at the same populations, e.g. --cells 8 16")
    ap.add_argument("--overflow-cells", type=int, default=0, metavar="K",
                    help="with --cells: time each N-cell row again with K overflow cells "
                    "(SynapseSpec.overflow_cells; needs K < N), e.g. --cells 8 "
                    "--overflow-cells 1")
    ap.add_argument("--matmul-dtype", choices=devices.MATMUL_DTYPES, default="float32",
                    help="operand precision of every crossbar and request product "
                    "(DeviceSpec.matmul_dtype) and of the reference matmul rows")
    args = ap.parse_args()
    if args.overflow_cells and not any(n > args.overflow_cells for n in args.cells):
        ap.error(f"--overflow-cells {args.overflow_cells} needs a --cells N above it (the "
                 f"overflow goes to other cells of the same synapse)")
    global MATMUL_DTYPE
    MATMUL_DTYPE = args.matmul_dtype
    only = set(args.only or ("ff", "rram", "distill", "eval"))
    widths = tuple(args.widths or ((500,) if args.quick else (500, 1000, 2000)))
    default_pops = (1, 4, 16, 64, 256) if jax.default_backend() == "gpu" else (1, 4, 16, 64)
    pops = tuple(args.populations or ((1, 4) if args.quick else default_pops))
    steps = 3 if args.quick else args.steps
    rows: list[dict[str, Any]] = matmul_rate(args.repeats)
    mm = rows[0]["gflops"]  # the FF-shaped product is the honest ceiling for an FF step
    payload: dict[str, Any] = {"command": " ".join(sys.argv), "environment": environment(),
                               "matmul_gflops_ff_shape": mm, "matmul_dtype": MATMUL_DTYPE,
                               "rows": rows}

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        print(table([row], mm).splitlines()[-1], flush=True)
        write_json_atomic(Path(args.out), payload)

    print(table(rows, mm), flush=True)
    ref_w = 500 if args.quick else 1000
    if "ff" not in only:  # the references the other sections are compared with
        widths, pops = (ref_w,), (1,)
    for w in widths:
        for p in pops:
            for program in ("map", "vmap") if "ff" in only else ("map",):
                if estimated_gb("ideal", w, p) > args.max_gb:
                    add({"section": "ff", "preset": "ideal", "widths": f"784-{w}-{w}-{w}",
                         "P": p, "skipped": f"state over --max-gb {args.max_gb}"})
                    break
                add(bench_ff("ideal", w, p, steps, args.repeats, program))
    cost_pops = (1, 4) if args.quick else (1, 16)  # populations of the cost comparisons
    if "ff" in only and args.pairs > 0:
        add(bench_scaling_paired(ref_w, cost_pops[1], steps, args.pairs))
    if "rram" in only and args.pairs > 0:
        add(bench_paired(ref_w, steps, args.pairs))
    for p in cost_pops if "rram" in only else ():
        add(bench_ff("rram", ref_w, p, steps, args.repeats, "map"))
        for n in args.cells:
            if estimated_gb("rram", ref_w, p, n) > args.max_gb:
                add({"section": "ff", "preset": "rram", "widths": f"784-{ref_w}-{ref_w}-{ref_w}",
                     "P": p, "cells": n, "skipped": f"state over --max-gb {args.max_gb}"})
                continue
            add(bench_ff("rram", ref_w, p, steps, args.repeats, "map", cells=n))
            if 0 < args.overflow_cells < n:
                add(bench_ff("rram", ref_w, p, steps, args.repeats, "map", cells=n,
                             overflow=args.overflow_cells))
    for p in cost_pops:
        if "distill" in only:
            add(bench_distill("ideal", ref_w, p, steps, args.repeats))
        if "eval" in only:
            add(bench_eval("ideal", ref_w, p, 1000 if args.quick else 2000, args.repeats))
    print()
    print(table(rows, mm))
    summary = {**summarise(rows, ref_w), "matmul_dtype": MATMUL_DTYPE}
    payload["summary"] = summary
    write_json_atomic(Path(args.out), payload)
    print()
    print(json.dumps(summary, indent=2))
    return 0


def summarise(rows: list[dict[str, Any]], w: int) -> dict[str, Any]:
    def find(section: str, preset: str, p: int, program: str = "map", cells: int = 1
             ) -> dict[str, Any] | None:
        for r in rows:
            if (r["section"] == section and r.get("preset") == preset and r.get("P") == p
                    and r.get("program") == program and r["widths"].startswith(f"784-{w}-")
                    and r.get("cells", 1) == cells and not r.get("overflow_cells")
                    and not r.get("skipped")):
                return r
        return None

    mm = rows[0]["gflops"]
    out: dict[str, Any] = {"matmul_gflops_ff_shape": mm, "matmul_gflops_square": rows[1]["gflops"],
                           "widths": f"784-{w}-{w}-{w}"}
    for program in ("map", "vmap"):
        one, six = find("ff", "ideal", 1, program), find("ff", "ideal", 16, program) or find(
            "ff", "ideal", 4, program)
        if one:
            out[f"ideal_P1_{program}_fraction_of_matmul"] = one["gflops"] / mm
            out[f"ideal_P1_{program}_fraction_of_square_matmul"] = one["gflops"] / rows[1][
                "gflops"]
        if one and six:
            # cost per device-sample at P over that at P = 1
            out[f"per_device_cost_P{six['P']}_over_P1_{program}"] = (
                one["device_samples_per_s"] / six["device_samples_per_s"])
    scaling = next((r for r in rows if r["section"] == "scaling"), None)
    if scaling:  # the same ratio from neighbouring calls (bench_scaling_paired)
        out[f"per_device_cost_P{scaling['P']}_over_P1_paired"] = scaling["ratio_median"]
        out[f"per_device_cost_P{scaling['P']}_over_P1_paired_quartiles"] = [
            scaling["ratio_q1"], scaling["ratio_q3"]]
    rram, ideal = find("ff", "rram", 1), find("ff", "ideal", 1)
    if rram and ideal:
        out["rram_over_ideal_time"] = rram["seconds"] / ideal["seconds"]
    paired = next((r for r in rows if r["section"] == "paired"), None)
    if paired:
        out["rram_over_ideal_paired"] = paired["ratio_median"]
        out["rram_over_ideal_paired_quartiles"] = [paired["ratio_q1"], paired["ratio_q3"]]
        # the same fraction as the P = 1 row's, from the median of the paired ideal calls
        # (20 or so against the row's 3: steadier on a machine whose speed drifts)
        paired_widths = tuple(int(n) for n in paired["widths"].split("-"))
        out["ideal_P1_paired_fraction_of_matmul"] = (
            step_flops(paired_widths) / (paired["ideal_ms_per_step"] / 1000) / 1e9 / mm)
    for r in rows:  # several cells per synapse against one, at the same population
        one_cell = find("ff", "rram", r.get("P", 0))
        if r.get("cells", 1) != 1 and r["section"] == "ff" and one_cell and not r.get("skipped"):
            extra = f"_overflow{r['overflow_cells']}" if r.get("overflow_cells") else ""
            out[f"rram_cells{r['cells']}{extra}_over_rram_time_P{r['P']}"] = (
                r["seconds"] / one_cell["seconds"])
    dist = find("distill", "ideal", 1)
    if dist and ideal:
        out["distill_over_ff_time_P1"] = dist["seconds"] / ideal["seconds"]
    for program in ("map", "vmap"):  # the GPU target: P = 64, 3 × 1000, one epoch
        big = find("ff", "ideal", 64, program)
        if big:
            out[f"mnist_epoch_s_P64_{program}"] = 50_000 * 64 / big["device_samples_per_s"]
    ev = find("eval", "ideal", 1)
    if ev and ideal:
        out["eval_over_train_per_sample"] = ideal["device_samples_per_s"] / ev[
            "device_samples_per_s"]
    return out


if __name__ == "__main__":
    run_script(main)
