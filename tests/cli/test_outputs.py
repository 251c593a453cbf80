"""What the command line writes besides run files, and run files on a full disk: figures in the
format their suffix names, exports that replace an earlier export completely and are all or
nothing, and a run file that does not fit (created or resumed) reported in one line, with no
``.part`` file left.

In-process (``main([...])``) and tiny: a full disk is a file-size limit (``ulimit -f``) on this
process for the length of one command; run files for exports are written with ``RunWriter``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mortal import export, runs
from mortal.cli import main
from mortal.runlog import PopulationPlan, RunWriter

from ..mortal.test_runlog import _file_size_limit

TINY = ["--set", "data.train_limit=600", "--set", "data.eval_limit=100",
        "--set", "device.widths=[74,16,16]", "--set", "device.population=2",
        "--set", "train.epochs=2", "--set", "train.readout_from=0", "--seed", "3",
        "--set", "run.chunk=1"]


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mortal: error: "), err
    for needle in needles:
        assert needle in err, err
    return err


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spawned (fabricated, untrained) tiny population: a real run file, quick to make."""
    path = tmp_path_factory.mktemp("spawned") / "pop.h5"
    assert main(["spawn", "-o", str(path), *TINY]) == 0
    return path


# ---------------------------------------------------------------------------------------------
# a full disk while creating or resuming a run file
# ---------------------------------------------------------------------------------------------


def test_a_full_disk_while_creating_a_run_is_one_line_and_leaves_no_file(
        spawned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    new = tmp_path / "g.h5"
    for limit in (12 * 1024, 0):  # the skeleton does not fit; not even the lock file does
        with _file_size_limit(limit):
            err = _one_line_error(capsys, ["spawn", "-o", str(new), *TINY], "File too large")
        assert "Traceback" not in err and "buf = 0x" not in err, err
        assert _files(tmp_path) == []  # no g.h5, g.h5.part or g.h5.lock
    assert f"could not create {new}" in err or f"could not lock {new}" in err
    old = tmp_path / "old.h5"
    old.write_bytes(spawned.read_bytes())
    with _file_size_limit(12 * 1024):
        _one_line_error(capsys, ["train", "-o", str(old), "--force", *TINY],
                        f"could not create {old} (File too large)", f"{old} is unchanged")
    assert old.read_bytes() == spawned.read_bytes() and _files(tmp_path) == ["old.h5"]


def test_a_full_disk_while_resuming_is_one_line_and_keeps_the_run(
        spawned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    path = tmp_path / "f.h5"
    path.write_bytes(spawned.read_bytes())
    with _file_size_limit(path.stat().st_size):  # no room for the copy a resume writes
        err = _one_line_error(capsys, ["train", "--resume", str(path)],
                              f"could not resume {path}", f"{path} is unchanged")
    assert "Traceback" not in err and "resuming first writes a copy" in err, err
    assert path.read_bytes() == spawned.read_bytes() and _files(tmp_path) == ["f.h5"]
    assert runs.status(path) == "spawned"


# ---------------------------------------------------------------------------------------------
# figures: the format the suffix names
# ---------------------------------------------------------------------------------------------

MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".pdf": b"%PDF-", ".svg": b"<?xml"}


def _assert_format(path: Path) -> None:
    head = path.read_bytes()[:512]
    assert head.startswith(MAGIC[path.suffix.lower()]), (path, head[:16])
    if path.suffix.lower() == ".svg":
        assert b"<svg" in head
    assert not path.with_name(path.name + ".part").exists()


def test_figures_are_written_in_the_format_their_suffix_names(
        spawned: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = tmp_path / "t1.pdf"
    assert main(["plot", str(spawned), "-o", str(pdf)]) == 0
    assert f"wrote {pdf}" in capsys.readouterr().out
    _assert_format(pdf)
    for name in ("c.svg", "c.PNG", "c.Pdf"):
        out = tmp_path / name
        assert main(["devices", "--preset", "ideal", "--widths", "8", "4", "-n", "2",
                     "--plot", str(out)]) == 0
        _assert_format(out)
    from mortal.plots import pyplot, save_figure

    with pytest.raises(ValueError, match=r"name a \.png, \.pdf or \.svg file"):
        save_figure(pyplot().figure(), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


# ---------------------------------------------------------------------------------------------
# exports: an earlier export replaced completely; all or nothing
# ---------------------------------------------------------------------------------------------


def _run_file(path: Path, populations: tuple[str, ...], seed: int) -> Path:
    """A small complete run file (no devices to rebuild: enough for an export)."""
    p = 2
    plan = PopulationPlan(role="train", recipe={"name": "x"},
                          fab_keys=np.zeros((p, 2), np.uint32), key_impl="threefry2x32",
                          planned_epochs=1, metrics=("val_goodness_error",),
                          final=("test_goodness_error",),
                          checkpoint={"w": np.zeros((p, 3), np.float32)})
    with RunWriter.create(path, attributes={"config": f"[run]\nseed = {seed}\n", "seed": seed},
                          populations={name: plan for name in populations}) as w:
        for name in populations:
            w.append_epoch(name, 1, 10, 0.5, {"val_goodness_error": np.full(p, seed / 8)},
                           {"w": np.ones((p, 3), np.float32)})
            w.write_final(name, {"test_goodness_error": np.full(p, seed / 16)})
        w.finish()
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """A train + distill run (d1) and a train-only run (t1)."""
    return (_run_file(tmp_path / "d1.h5", ("train", "students"), 1),
            _run_file(tmp_path / "t1.h5", ("train",), 2))


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


T1_FILES = ["attributes.json", "config.toml", "lineage.csv", "train_final.csv",
            "train_metrics.csv"]


def test_export_with_force_replaces_the_earlier_export_completely(
        two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``export d1 --csv ex; export t1 --csv ex --force``: ex holds t1's export alone (no
    ``students_*.csv`` of d1's); a user's own file beside an export is kept."""
    d1, t1 = two_runs
    ex = tmp_path / "ex"
    assert main(["export", str(d1), "--csv", str(ex)]) == 0
    assert "students_metrics.csv" in _files(ex)
    assert main(["export", str(t1), "--csv", str(ex), "--force"]) == 0
    assert _files(ex) == T1_FILES
    assert "seed = 2" in (ex / "config.toml").read_text()
    assert json.loads((ex / "attributes.json").read_text())["seed"] == 2
    # beside a file of the user's: the export's files are replaced, the user's is kept
    assert main(["export", str(d1), "--csv", str(ex), "--force"]) == 0
    (ex / "notes.txt").write_text("mine")
    (ex / "plots").mkdir()
    assert main(["export", str(t1), "--csv", str(ex), "--force"]) == 0
    assert _files(ex) == sorted([*T1_FILES, "notes.txt", "plots"])
    assert (ex / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    capsys.readouterr()


def test_export_never_overwrites_a_file_that_is_not_from_an_export(
        two_runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder with the user's own ``config.toml`` (no export's ``attributes.json`` beside
    it): ``--force`` is refused in one line and nothing in the folder changes."""
    _, t1 = two_runs
    ex = tmp_path / "ex"
    ex.mkdir()
    (ex / "config.toml").write_text("[run]\nseed = 99  # mine\n")
    (ex / "train_metrics.csv").write_text("a,b\n1,2\n")
    before = _contents(ex)
    _one_line_error(capsys, ["export", str(t1), "--csv", str(ex), "--force"],
                    "is not from a mortal export", "move it away or export into another folder")
    assert _contents(ex) == before


def test_an_export_that_fails_midway_keeps_the_earlier_export(
        two_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while writing, or while moving the files in, leaves the earlier export as it
    was (every file, no file of the new one) and no staging folder."""
    d1, t1 = two_runs
    ex = tmp_path / "ex"
    export.export_csv(d1, ex)
    before = _contents(ex)
    real_write, real_replace = export._write_csv, os.replace

    def full_disk(path: Path, header: list[str], rows: list[list[object]]) -> Path:
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(export, "_write_csv", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export.export_csv(t1, ex)
    assert _contents(ex) == before
    monkeypatch.setattr(export, "_write_csv", real_write)
    moved_in = []

    def second_move_in_fails(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).parent == ex and Path(src).parent.name != ".previous":
            moved_in.append(dst)
            if len(moved_in) == 2:
                raise OSError(5, "Input/output error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_move_in_fails)
    with pytest.raises(OSError, match="Input/output error"):
        export.export_csv(t1, ex)
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(moved_in) == 2 and _contents(ex) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert _files(ex) == sorted(before)  # no staging folder inside either
