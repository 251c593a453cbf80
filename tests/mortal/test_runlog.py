"""Run files: writer and reader round trip, commit records, checkpoint slots, resume, lock."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mortal import runs
from mortal.runlog import (
    PopulationPlan,
    RunLockedError,
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
