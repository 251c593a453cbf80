"""Export a run file's records as CSV (read with ``mortal.runs`` only; live files work)."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from mortal import runs


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def _value(v: object) -> object:
    if isinstance(v, float | np.floating):
        return "" if not np.isfinite(v) else repr(float(v))
    return v


def export_csv(run: str | os.PathLike[str], folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``<population>_metrics.csv`` (a row per epoch and device), ``<population>_final.csv``,
    ``lineage.csv``, ``config.toml`` and ``attributes.json`` into ``folder``. Returns the paths.

    The files are written into a hidden staging folder beside ``folder`` and moved in only when
    all of them are complete, so a failure (a full disk) leaves no partial export behind."""
    out = Path(folder)
    runs.attributes(run)  # fail early, with a clear message, on a file that is not a run
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.part"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir()
        names = [p.name for p in _write_all(run, stage)]
        out.mkdir(exist_ok=True)
        for name in names:
            os.replace(stage / name, out / name)
    except OSError as exc:  # name the folder the user gave, not the staging folder
        raise type(exc)(exc.errno, exc.strerror, str(out)) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in names]


def _write_all(run: str | os.PathLike[str], out: Path) -> list[Path]:
    written = []
    for name in runs.populations(run):
        m = runs.metrics(run, name)
        names = [k for k in m if k not in ("epoch", "step", "wall_time")]
        size = runs.population_info(run, name)["size"]
        rows = [[int(m["epoch"][e]), int(m["step"][e]), _value(m["wall_time"][e]), d,
                 *(_value(m[k][e, d]) for k in names)]
                for e in range(len(m["epoch"])) for d in range(size)]
        written.append(_write_csv(out / f"{name}_metrics.csv",
                                  ["epoch", "step", "wall_time_s", "device", *names], rows))
        fin = runs.final(run, name)
        keys = sorted(fin)
        written.append(_write_csv(out / f"{name}_final.csv", ["device", *keys],
                                  [[d, *(_value(fin[k][d]) for k in keys)] for d in range(size)]))
    lineage = runs.lineage(run)
    keys = sorted({k for r in lineage for k in r})
    written.append(_write_csv(out / "lineage.csv", keys,
                              [[r.get(k, "") for k in keys] for r in lineage]))
    cfg = out / "config.toml"
    cfg.write_text(runs.config_text(run))
    attrs = out / "attributes.json"
    a = runs.attributes(run)
    a.pop("config", None)
    a["status"] = runs.status(run)
    attrs.write_text(json.dumps(a, indent=2, default=str))
    return [*written, cfg, attrs]
