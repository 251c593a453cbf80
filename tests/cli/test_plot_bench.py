"""``scripts/plot_bench.py`` draws what ``bench.py`` measured, and refuses what it cannot read.

The figures' numbers are checked against ``bench.summarise`` and the rows of committed,
measured results (session 13's full run, session 45's paired ``rram`` run); the refusals run
in subprocesses as a user would start them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ._scripts import ROOT, SCRIPTS, import_script

FULL_RUN = SCRIPTS / "results" / "bench_s13.json"
PAIRED_RUN = SCRIPTS / "results" / "session45" / "bench_rram_paired_1.json"
SCALING_RUN = SCRIPTS / "results" / "session46" / "bench_full_b988248.json"


@pytest.fixture(scope="module")
def plot_bench() -> ModuleType:
    return import_script("plot_bench")


def test_the_panels_draw_the_measured_rows_and_the_summary(plot_bench: ModuleType) -> None:
    payload = plot_bench.load(FULL_RUN)
    s = plot_bench.series(payload)
    mm = payload["rows"][0]["gflops"]
    ps, fractions = s["fraction"][(1000, "map")]
    assert ps == [1, 4, 16, 64]
    assert fractions[0] == pytest.approx(s["summary"]["ideal_P1_map_fraction_of_matmul"])
    rows = {(r["widths"], r["P"], r["program"]): r for r in payload["rows"]
            if r["section"] == "ff" and r.get("preset") == "ideal" and not r.get("skipped")}
    assert fractions[2] == pytest.approx(rows[("784-1000-1000-1000", 16, "map")]["gflops"] / mm)
    ps, cost = s["scaling"][(1000, "map")]
    assert cost[0] == 1.0
    assert cost[ps.index(16)] == pytest.approx(s["summary"]["per_device_cost_P16_over_P1_map"])
    # the 2000-wide population of 64 was skipped (memory): no point is drawn for it
    assert s["throughput"][(2000, "map")][0] == [1, 4, 16]
    labels = [c[0] for c in s["costs"]]
    assert labels[0] == "rram,\nP = 1"  # this run had no paired calls: the plain ratio
    assert s["costs"][0][1] == pytest.approx(s["summary"]["rram_over_ideal_time"])
    distill = dict((c[0], c[1]) for c in s["costs"])["distill,\n1 student"]
    assert distill == pytest.approx(payload["summary"]["distill_over_ff_time_P1"])


def test_the_paired_ratio_is_drawn_with_its_quartiles(plot_bench: ModuleType,
                                                      tmp_path: Path) -> None:
    payload = plot_bench.load(PAIRED_RUN)
    out = tmp_path / "figures" / "paired.png"
    s = plot_bench.plot(payload, out)
    paired = next(r for r in payload["rows"] if r["section"] == "paired")
    label, ratio, quartiles = s["costs"][0]
    assert label == "rram,\nP = 1 (paired)"
    assert ratio == paired["ratio_median"]
    assert quartiles == (paired["ratio_q1"], paired["ratio_q3"])
    ideal = next(r for r in payload["rows"] if r["section"] == "ff" and r["P"] == 1
                 and r["preset"] == "ideal")
    rram16 = next(r for r in payload["rows"] if r["section"] == "ff" and r["P"] == 16
                  and r["preset"] == "rram")
    per_device = dict((c[0], c[1]) for c in s["costs"])["rram,\nP = 16"]
    assert per_device == pytest.approx(ideal["device_samples_per_s"]
                                       / rram16["device_samples_per_s"])
    # the 75 % target from the paired ideal calls' median: the P = 1 row's rate, rescaled by
    # the two times of the same 10-step slice
    row_fraction = s["summary"]["ideal_P1_map_fraction_of_matmul"]
    paired_seconds = paired["ideal_ms_per_step"] * paired["steps"] / 1000
    assert s["summary"]["ideal_P1_paired_fraction_of_matmul"] == pytest.approx(
        row_fraction * ideal["seconds"] / paired_seconds)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["paired.png"]  # no .part left


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "plot_bench.py"), *args],
                          env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(("content", "says"), [
    (None, "no such file; give the JSON that scripts/bench.py wrote"),
    ("{not json", "not readable as JSON"),
    (json.dumps({"rows": [{"section": "ff"}]}), "not a scripts/bench.py result"),
])
def test_what_is_not_a_bench_result_is_one_line(tmp_path: Path, content: str | None,
                                                says: str) -> None:
    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content)
    r = _script(str(path))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("plot_bench.py: ") and says in lines[0]
    assert not list(tmp_path.glob("*.png*"))


def test_a_figure_path_that_is_not_png_is_refused(tmp_path: Path) -> None:
    r = _script(str(PAIRED_RUN), "--out", str(tmp_path / "figure.pdf"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "must end in .png" in r.stderr
    assert not list(tmp_path.iterdir())


def test_the_paired_scaling_ratio_is_the_median_of_its_rounds(plot_bench: ModuleType) -> None:
    import numpy as np

    payload = plot_bench.load(SCALING_RUN)
    row = next(r for r in payload["rows"] if r["section"] == "scaling")
    p = row["P"]
    rounds = [tp / p / t1 for tp, t1 in zip(row["times"][str(p)], row["times"]["1"],
                                            strict=True)]
    assert len(rounds) == row["pairs"] == 20
    summary = plot_bench.series(payload)["summary"]
    assert summary[f"per_device_cost_P{p}_over_P1_paired"] == pytest.approx(np.median(rounds))
    q1, q3 = summary[f"per_device_cost_P{p}_over_P1_paired_quartiles"]
    assert q1 == pytest.approx(np.percentile(rounds, 25))
    assert q3 == pytest.approx(np.percentile(rounds, 75))
    # the row's per-step times are the medians of the same calls
    assert row["P1_ms_per_step"] == pytest.approx(
        1000 * np.median(row["times"]["1"]) / row["steps"])
