"""Run files: writer and reader round trip, commit records, checkpoint slots, resume, lock."""

from __future__ import annotations

import contextlib
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest

from mortal import runs
from mortal.runlog import (
    PopulationPlan,
    RunLockedError,
    RunWriteError,
    RunWriter,
    acquire_lock,
    is_locked,
    release_lock,
)

P = 3


def _plan() -> PopulationPlan:
    return PopulationPlan(role="train", recipe={"name": "x", "widths": [4, 2]},
                          fab_keys=np.arange(2 * P, dtype=np.uint32).reshape(P, 2),
                          key_impl="threefry2x32", planned_epochs=5, metrics=("loss", "err"),
                          final=("test_err",),
                          checkpoint={"w": np.zeros((P, 4, 2), np.float32),
                                      "step": np.zeros((P,), np.int32)})


def _create(path, **kw) -> RunWriter:
    return RunWriter.create(path, attributes={"config": "[run]\nseed = 0\n", "seed": 0,
                                              "host": {"hostname": "h"}},
                            populations={"train": _plan()}, **kw)


def _epoch(w: RunWriter, e: int, checkpoint: bool = True) -> None:
    w.append_epoch("train", e, 10 * e, 0.5 * e, {"loss": np.full(P, e, np.float32)},
                   {"w": np.full((P, 4, 2), e, np.float32), "step": np.full(P, e, np.int32)}
                   if checkpoint else None)


def test_round_trip(tmp_path) -> None:
    path = tmp_path / "r.h5"
    with _create(path) as w:
        for e in (1, 2, 3):
            _epoch(w, e)
        w.write_final("train", {"test_err": np.array([0.1, 0.2, 0.3])})
        w.add_lineage([{"teacher": "a", "student": "b", "generation": 1}])
        w.finish()
    m = runs.metrics(path, "train")
    assert list(m["epoch"]) == [1, 2, 3] and list(m["step"]) == [10, 20, 30]
    assert m["loss"].shape == (3, P) and np.all(m["loss"][:, 0] == [1, 2, 3])
    assert np.isnan(m["err"]).all()  # not measured: NaN
    epoch, leaves = runs.checkpoint(path, "train")
    assert epoch == 3 and np.all(leaves["w"] == 3) and leaves["step"].dtype == np.int32
    assert runs.status(path) == "complete"
    assert runs.lineage(path) == [{"teacher": "a", "student": "b", "generation": 1}]
    assert np.allclose(runs.final(path, "train")["test_err"], [0.1, 0.2, 0.3])
    a = runs.attributes(path)
    assert a["format"] == "mortal-run" and a["schema_version"] == runs.SCHEMA_VERSION
    assert a["host"] == {"hostname": "h"}
    info = runs.population_info(path, "train")
    assert info["size"] == P and info["epochs_done"] == 3 and info["planned_epochs"] == 5
    assert not (tmp_path / "r.h5.part").exists() and not (tmp_path / "r.h5.lock").exists()


def test_a_torn_checkpoint_is_never_used(tmp_path) -> None:
    """A checkpoint written but not committed (killed before the epoch record) is ignored, and
    the slot it overwrote was the older one, so the last committed checkpoint survives."""
    path = tmp_path / "r.h5"
    w = _create(path)
    _epoch(w, 1)
    _epoch(w, 2)
    w.write_checkpoint("train", 3, {"w": np.full((P, 4, 2), 3.0, np.float32),
                                    "step": np.full(P, 3, np.int32)})
    assert runs.checkpoint(path, "train")[0] == 2  # live reader: epoch 3 is not committed
    w.close()
    with RunWriter.resume(path) as w2:
        assert w2.epochs_done("train") == 2
        epoch, leaves = runs.checkpoint(path, "train")  # read live, beside the writer
        assert epoch == 2 and np.all(leaves["w"] == 2)


def test_resume_drops_epochs_after_the_newest_checkpoint(tmp_path) -> None:
    path = tmp_path / "r.h5"
    w = _create(path)
    _epoch(w, 1)
    _epoch(w, 2, checkpoint=False)  # committed metrics, no checkpoint (checkpoint_every > 1)
    w.close()
    assert len(runs.metrics(path, "train")["epoch"]) == 2
    with RunWriter.resume(path) as w2:
        assert w2.epochs_done("train") == 1  # epoch 2 must be recomputed from epoch 1's state
        _epoch(w2, 2)
    assert list(runs.metrics(path, "train")["epoch"]) == [1, 2]


def test_second_writer_is_refused(tmp_path) -> None:
    path = tmp_path / "r.h5"
    w = _create(path)
    assert is_locked(path)
    with pytest.raises(RunLockedError, match="being written by another process"):
        RunWriter.resume(path)
    with pytest.raises(RunLockedError):
        _create(path, force=True)
    runs.metrics(path, "train")  # readers are welcome while it is written
    w.close()
    assert not is_locked(path)
    fd = acquire_lock(path)
    release_lock(path, fd)


def test_existing_file_needs_force(tmp_path) -> None:
    path = tmp_path / "r.h5"
    _create(path).close()
    with pytest.raises(FileExistsError, match="--force"):
        _create(path)
    _create(path, force=True).close()


def test_reader_refuses_foreign_and_newer_files(tmp_path) -> None:
    text = tmp_path / "t.h5"
    text.write_text("hello")
    with pytest.raises(runs.RunFileError, match="not an HDF5 run file"):
        runs.summary(text)
    other = tmp_path / "o.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(runs.RunFileError, match="not a mortal run file"):
        runs.summary(other)
    newer = tmp_path / "n.h5"
    _create(newer).close()
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = runs.SCHEMA_VERSION + 1
    with pytest.raises(runs.RunFileError, match="newer than this mortal reads"):
        runs.summary(newer)
    with pytest.raises(runs.RunFileError, match="does not exist"):
        runs.summary(tmp_path / "missing.h5")
    fine = tmp_path / "f.h5"
    _create(fine).close()
    with pytest.raises(runs.RunFileError, match="no population 'students'"):
        runs.metrics(fine, "students")


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Files of this process cannot grow past ``limit`` bytes (``ulimit -f``), as on a full
    disk; writes past it fail with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _three_epochs(path: Path) -> bytes:
    """A closed run file of three epochs at ``path``; returns its bytes."""
    w = _create(path)
    for e in (1, 2, 3):
        _epoch(w, e)
    w.close()
    return path.read_bytes()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_full_disk_while_creating_leaves_no_file(tmp_path) -> None:
    """A new run file that does not fit: RunWriteError with the reason on one line, no
    ``.part`` or lock file left, and a file it was to replace (``force``) unchanged."""
    path = tmp_path / "r.h5"
    for limit in (0, 4096):  # 0: not even the lock file's process id fits
        with _file_size_limit(limit), pytest.raises(RunWriteError) as info:
            _create(path)
        message = str(info.value)
        assert "\n" not in message and "File too large" in message, message
        assert _files(tmp_path) == []
    assert "could not create" in message and "nothing was written" in message
    old = tmp_path / "old.h5"
    _create(old).close()
    data = old.read_bytes()
    with _file_size_limit(4096), pytest.raises(RunWriteError, match=r"old\.h5 is unchanged"):
        _create(old, force=True)
    assert old.read_bytes() == data and _files(tmp_path) == ["old.h5"]
    with _create(old, force=True) as w:  # with room again: a normal run file
        _epoch(w, 1)
    assert runs.population_info(old, "train")["epochs_done"] == 1


def test_a_full_disk_while_resuming_keeps_the_file_as_it_was(tmp_path) -> None:
    """Resuming copies the file: without room for the copy it is refused before anything is
    written, the file is unchanged and not locked, and it resumes once there is room."""
    path = tmp_path / "r.h5"
    data = _three_epochs(path)
    with _file_size_limit(len(data)), pytest.raises(RunWriteError) as info:
        RunWriter.resume(path)
    message = str(info.value)
    assert message.startswith(f"could not resume {path} (need about") and "\n" not in message
    assert f"{path} is unchanged" in message
    assert path.read_bytes() == data and _files(tmp_path) == ["r.h5"] and not is_locked(path)
    with RunWriter.resume(path) as w2:
        assert w2.epochs_done("train") == 3


def test_a_resume_copy_that_fails_anyway_leaves_the_file_as_it_was(tmp_path) -> None:
    """Should the copy fail although the room seemed enough (another writer filled the disk),
    HDF5's failed write is not touched again (in a process of its own, which then exits at
    once, as the command line does); the ``.part`` copy is deleted and the file unchanged."""
    path = tmp_path / "r.h5"
    data = _three_epochs(path)
    script = (
        "import os, resource, sys\n"
        "from mortal import runlog\n"
        "runlog._check_room = lambda path, needed: None  # as if the room were enough\n"
        "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))\n"
        "try:\n"
        "    runlog.RunWriter.resume(sys.argv[1])\n"
        "except runlog.RunWriteError as exc:\n"
        "    print(exc, flush=True)\n"
        "    os._exit(3)\n"
        "os._exit(0)\n")
    r = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert r.stdout.count("\n") == 1 and "File too large" in r.stdout, r.stdout
    assert f"could not resume {path}" in r.stdout and f"{path} is unchanged" in r.stdout
    assert r.stderr == ""  # HDF5's own reports are held back
    assert path.read_bytes() == data and _files(tmp_path) == ["r.h5"]
