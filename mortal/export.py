"""Export a run file's records as CSV (read with ``mortal.runs`` only; live files work).

An export is all or nothing: its files are written into a hidden staging folder and moved in
only when all of them are complete. Exporting into a folder that holds an earlier export
replaces that export completely (no file of it is left beside the new one); files that are not
from an export are left alone, and one that the new export would overwrite is refused before
anything is written.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from mortal import runs

_FIXED = ("lineage.csv", "config.toml", "attributes.json")
_METRICS_HEADER = "epoch,step,wall_time_s,device"


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


class ExportClashError(FileExistsError):
    """The export folder holds a file not from an export under a name the export writes."""


def export_names(run: str | os.PathLike[str]) -> list[str]:
    """The names of the files ``export_csv`` writes for ``run``, in the order written."""
    names = []
    for name in runs.populations(run):
        names += [f"{name}_metrics.csv", f"{name}_final.csv"]
    return [*names, *_FIXED]


def export_csv(run: str | os.PathLike[str], folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``<population>_metrics.csv`` (a row per epoch and device), ``<population>_final.csv``,
    ``lineage.csv``, ``config.toml`` and ``attributes.json`` into ``folder``. Returns the paths.

    All or nothing: the files are written into a hidden staging folder (beside ``folder``, or
    inside it if it exists) and moved in only when all of them are complete, so a failure (a
    full disk) leaves no partial export and keeps an earlier one. An earlier export in
    ``folder`` (recognised by its ``attributes.json`` and the files' headers) is replaced
    completely; other files are kept. Raises ``ExportClashError`` (a ``FileExistsError``)
    before writing anything if ``folder`` holds a file of another origin under a name the
    export writes."""
    out = Path(folder)
    runs.attributes(run)  # fail early, with a clear message, on a file that is not a run
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(out))
    names = export_names(run)
    previous = _previous_export(out) if out.is_dir() else []
    _refuse_clashes(out, names, previous)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # staging inside an existing folder: the same file system, and no need to write beside
        stage = _staging_folder(out if out.is_dir() else out.parent, out.name or "export")
        keep = False
        try:
            names = [p.name for p in _write_all(run, stage)]
            if out.is_dir():
                _refuse_clashes(out, names, previous)
                try:
                    _swap_in(stage, out, names, previous)
                except _StrandedError:
                    keep = True  # it holds the earlier export
                    raise
            else:
                os.rename(stage, out)  # a new folder appears complete, at once
        finally:
            if not keep:
                shutil.rmtree(stage, ignore_errors=True)
    except ExportClashError:
        raise
    except OSError as exc:  # name the folder the user gave, not the staging folder
        raise type(exc)(exc.errno, exc.strerror, str(out)) from None
    return [out / name for name in names]


def _refuse_clashes(out: Path, names: list[str], previous: list[str]) -> None:
    """Raise ``ExportClashError`` if ``out`` holds something not from an export under a name
    the export writes (it would be overwritten)."""
    for name in names:
        if name not in previous and ((out / name).exists() or (out / name).is_symlink()):
            raise ExportClashError(f"{out / name} exists and is not from a mortal export; move "
                                  "it away or export into another folder")


def _staging_folder(parent: Path, name: str) -> Path:
    """A new, uniquely named hidden folder in ``parent`` (created with the user's umask, so a
    staging folder renamed into place has the permissions of any new folder)."""
    while True:
        stage = parent / f".{name}.{secrets.token_hex(4)}.part"
        try:
            stage.mkdir()
            return stage
        except FileExistsError:
            continue


class _StrandedError(OSError):
    """Replacing an export failed, and so did undoing it: the earlier export is in staging."""


def _swap_in(stage: Path, out: Path, names: list[str], previous: list[str]) -> None:
    """Replace the earlier export ``previous`` in ``out`` by the files ``names`` in ``stage``:
    the earlier files are moved aside into ``stage``, the new ones moved in. If a move fails,
    the moves made are undone, so ``out`` holds the earlier export again, and the error is
    raised; should undoing fail too, ``_StrandedError`` says where the earlier export is."""
    aside = stage / ".previous"
    aside.mkdir()
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        for name in previous:
            os.replace(out / name, aside / name)
            moved_aside.append(name)
        for name in names:
            os.replace(stage / name, out / name)
            moved_in.append(name)
    except OSError as exc:
        try:
            for name in reversed(moved_in):
                os.replace(out / name, stage / name)
            for name in reversed(moved_aside):
                os.replace(aside / name, out / name)
        except OSError:
            raise _StrandedError(exc.errno, f"{exc.strerror}; the earlier export was moved to "
                            f"{aside}", str(out)) from None
        raise


def _first_line(path: Path) -> str:
    try:
        with open(path, newline="") as fh:
            return fh.readline(4096).rstrip("\r\n")
    except (OSError, UnicodeDecodeError):
        return ""


def _previous_export(folder: Path) -> list[str]:
    """The files of an earlier export in ``folder``: only if its ``attributes.json`` is an
    export's (a mortal run's attributes and status); then ``config.toml``, ``lineage.csv`` and
    every ``*_metrics.csv`` / ``*_final.csv`` whose header is an export's. Anything else (a
    user's own files, folders, links) is not part of it."""
    try:
        attrs = json.loads((folder / "attributes.json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    if not (isinstance(attrs, dict) and attrs.get("format") == runs.FORMAT and "status" in attrs):
        return []
    return [p.name for p in sorted(folder.iterdir()) if _is_export_file(p)]


def _is_export_file(p: Path) -> bool:
    """Whether ``p``, in a folder with an export's ``attributes.json``, is a file of it."""
    if p.is_symlink() or not p.is_file():
        return False
    if p.name in _FIXED:
        return True
    if p.name.endswith("_metrics.csv"):
        return _first_line(p).startswith(_METRICS_HEADER)
    if p.name.endswith("_final.csv"):
        return _first_line(p).split(",")[0] == "device"
    return False


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
