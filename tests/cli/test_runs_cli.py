"""End to end: the mortal command line writing, resuming, reading and refusing run files.

The runs are tiny (2 devices of 74-16-16 on 600 digits) but go through the real commands in
subprocesses, as a user would.
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mortal import runs
from mortal.cli import main
from mortal.runlog import acquire_lock, release_lock
from mortal.xla_cpu import REGION_FLAG, VECTOR_FLAG, has_avx512

TINY = ["--set", "data.train_limit=600", "--set", "data.eval_limit=100",
        "--set", "device.widths=[74,16,16]", "--set", "device.population=2",
        "--set", "train.epochs=6", "--set", "train.readout_from=0",
        "--set", "distill.epochs=4", "--set", "distill.students=2", "--seed", "3",
        "--set", "run.chunk=1"]  # one device at a time: any split gives the same bits
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _mortal(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mortal", *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    p = _mortal(*args, **kw)
    out, err = p.communicate(timeout=600)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _content(path: Path) -> dict[str, np.ndarray]:
    """Everything a run computes (not wall times, dates or the command line)."""
    out: dict[str, np.ndarray] = {}
    for name in runs.populations(path):
        for k, v in runs.metrics(path, name).items():
            if k != "wall_time":
                out[f"{name}/metrics/{k}"] = v
        for k, v in runs.final(path, name).items():
            out[f"{name}/final/{k}"] = v
        epoch, leaves = runs.checkpoint(path, name)
        out[f"{name}/checkpoint_epoch"] = np.array(epoch)
        out.update({f"{name}/checkpoint/{k}": v for k, v in leaves.items()})
        out[f"{name}/fab_keys"] = runs.population_info(path, name)["fab_keys"]
    out["lineage"] = np.array([str(r) for r in runs.lineage(path)])
    return out


def _assert_identical(a: Path, b: Path) -> None:
    ca, cb = _content(a), _content(b)
    assert sorted(ca) == sorted(cb)
    for k in ca:
        assert ca[k].dtype == cb[k].dtype and ca[k].shape == cb[k].shape, k
        nan_ok = np.issubdtype(ca[k].dtype, np.floating)
        assert np.array_equal(ca[k], cb[k], equal_nan=nan_ok), f"{k} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted tiny demo run (train, then distil the best device into 2 students)."""
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    r = _run("demo", "-o", str(path), *TINY)
    assert r.returncode == 0, r.stderr
    assert "agreement" in r.stdout and path.with_suffix(".png").stat().st_size > 10_000
    return path


def test_a_run_records_what_it_did(reference: Path) -> None:
    s = runs.summary(reference)
    assert s["status"] == "complete"
    a = s["attributes"]
    for key in ("mortal_version", "source_revision", "library_versions", "host",
                "command_line", "created", "config", "seed"):
        assert key in a, key
    assert a["seed"] == 3 and "jax" in a["library_versions"]
    assert "demo" in a["command_line"]
    cfg = runs.config(reference)
    assert cfg["device"]["population"] == 2 and cfg["run"]["seed"] == 3
    train, students = s["populations"]["train"], s["populations"]["students"]
    assert train["epochs_done"] == 6 and students["epochs_done"] == 4
    assert train["metrics"]["val_goodness_error"].shape == (6, 2)
    assert np.isfinite(students["final"]["test_agreement"]).all()
    lineage = s["lineage"]
    assert len(lineage) == 2 and {r["student"] for r in lineage} == {"students/0", "students/1"}
    assert lineage[0]["temperature"] == 20.0 and lineage[0]["generation"] == 1
    assert lineage[0]["teacher"].startswith("train/")
    # checkpoints keep the documented layout (docs/log-format.md): an rram device's conductances
    # and read offsets as separate float32 datasets, whatever the device holds in memory
    _, leaves = runs.checkpoint(reference, "train")
    for part in ("weights", "offsets"):
        a = leaves[f"device_state.{part}.0"]
        assert a.dtype == np.float32 and a.shape == (2, 75, 16), part
    assert np.any(leaves["device_state.offsets.0"] != 0)


def test_load_device_rebuilds_the_identical_instance(reference: Path) -> None:
    import jax

    import devices
    from mortal import cli_jobs
    from mortal.config import load_config

    cfg = load_config(text=runs.config_text(reference))
    keys = cli_jobs.fab_keys(cfg, "train", 2)
    spec = cli_jobs.device_spec(cfg, "train")
    for i in range(2):
        rebuilt = runs.load_device(reference, i)
        fresh = devices.fabricate(spec, keys[i])
        assert rebuilt.spec == fresh.spec
        for a, b in zip(jax.tree.leaves(rebuilt), jax.tree.leaves(fresh), strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
    trained = runs.load_device(reference, 1, state="checkpoint")
    assert not np.array_equal(np.asarray(trained.state.weights[0]),
                              np.asarray(runs.load_device(reference, 1).state.weights[0]))
    with pytest.raises(runs.RunFileError, match="out of range"):
        runs.load_device(reference, 2)


def test_sigkill_then_resume_is_bit_identical(reference: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Kill the writer at a random moment after its first epoch, read the live and the killed
    file, refuse a second writer, then resume: the result equals the uninterrupted run."""
    path = tmp_path / "killed.h5"
    proc = _mortal("demo", "-o", str(path), *TINY)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if runs.population_info(path, "train")["epochs_done"] >= 1:
                break
        except runs.RunFileError:
            pass
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    # a live file: show and export work, a second writer is refused
    assert main(["show", str(path)]) == 0
    assert "being written now" in capsys.readouterr().out
    assert main(["export", str(path), "--csv", str(tmp_path / "live_csv")]) == 0
    assert main(["plot", str(path), "-o", str(tmp_path / "live.png")]) == 0
    assert (tmp_path / "live.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "live_csv" / "train_metrics.csv").read_text().count("\n") >= 3
    assert main(["demo", "--resume", str(path)]) == 2
    err = capsys.readouterr().err
    assert "being written by another process" in err and err.count("\n") == 1
    delay = random.uniform(0.0, 4.0)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    done = {n: runs.population_info(path, n)["epochs_done"] for n in runs.populations(path)}
    if runs.status(path) != "complete":  # the usual case; else the kill came after the end
        assert main(["show", str(path)]) == 0
        assert "INCOMPLETE" in capsys.readouterr().out, (delay, done)
    r = _run("demo", "--resume", str(path))
    assert r.returncode == 0, (delay, done, r.stderr)
    assert runs.status(path) == "complete"
    _assert_identical(reference, path)


def test_show_plot_export_on_a_finished_file(reference: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(reference)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "agreement %" in out and "students" in out
    png = tmp_path / "r.png"
    assert main(["plot", str(reference), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert main(["export", str(reference), "--csv", str(tmp_path / "csv")]) == 0
    rows = (tmp_path / "csv" / "students_metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 2 and rows[0].startswith("epoch,step,wall_time_s,device")
    assert "temperature" in (tmp_path / "csv" / "lineage.csv").read_text()
    assert main(["eval", str(reference), "--population", "train"]) == 0
    assert "goodness err %" in capsys.readouterr().out
    assert main(["config", "--from", str(reference)]) == 0
    assert "seed = 3" in capsys.readouterr().out


def test_distill_from_a_trained_run_file(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "d.h5"
    r = _run("distill", "--teacher", str(reference), "--device", "0", "-o", str(out),
             "--set", "distill.epochs=2", "--set", "distill.students=2",
             "--set", "data.train_limit=600", "--set", "data.eval_limit=100",
             "--set", "train.readout_from=0", "--set", "distill.transfer=fraction",
             "--set", "distill.fraction=0.5", "--set", "distill.generations=2")
    assert r.returncode == 0, r.stderr
    lineage = runs.lineage(out)
    assert lineage[0]["teacher"] == f"{reference}:train/0"
    assert "50.0% of digits" in lineage[0]["transfer_set"]
    # a chain: the best student of generation 1 teaches generation 2's fresh devices
    assert runs.populations(out) == ["students", "students_g2"]
    assert [r["generation"] for r in lineage] == [1, 1, 2, 2]
    assert lineage[2]["teacher"].startswith("students/")
    assert lineage[2]["student"] == "students_g2/0"
    assert np.isfinite(runs.final(out, "students_g2")["test_agreement"]).all()
    keys = [runs.population_info(out, n)["fab_keys"] for n in ("students", "students_g2")]
    assert not np.array_equal(keys[0], keys[1])  # fresh devices in every generation


def test_students_without_a_class_get_the_bias_correction(reference: Path,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "no3.h5"
    r = _run("distill", "--teacher", str(reference), "--device", "0", "-o", str(out),
             "--set", "distill.epochs=2", "--set", "distill.students=2",
             "--set", "data.train_limit=600", "--set", "data.eval_limit=100",
             "--set", "train.readout_from=0", "--set", "distill.transfer=without",
             "--set", "distill.leave_out=[3]", "--set", "distill.bias_correction=true",
             "--set", "distill.bias_images=200")
    assert r.returncode == 0, r.stderr
    assert "corrected err %" in r.stdout and "corrected left-out acc %" in r.stdout
    fin = runs.final(out, "students")
    for k in ("test_corrected_error", "test_left_out_accuracy",
              "test_left_out_accuracy_corrected"):
        assert fin[k].shape == (2,) and np.all((fin[k] >= 0) & (fin[k] <= 1)), (k, fin[k])
    # the accuracies are fractions of the test 3s: multiples of 1 / (number of 3s)
    from mortal import data

    threes = int(np.sum(data.load_digits().y_test == 3))
    for k in ("test_left_out_accuracy", "test_left_out_accuracy_corrected"):
        np.testing.assert_allclose(fin[k] * threes, np.round(fin[k] * threes), atol=1e-4)
    # the reference run did not ask for it: no such results, no such columns
    assert "test_corrected_error" not in runs.final(reference, "students")


def test_resume_under_other_xla_flags_warns(tmp_path: Path) -> None:
    # the vector width can change how sums round: a run resumed under other XLA_FLAGS than it
    # was written with is no longer bit-identical to an uninterrupted one, and says so
    path = tmp_path / "spawned.h5"
    tiny = ["--set", "data.train_limit=200", "--set", "data.eval_limit=50",
            "--set", "device.widths=[74,8,8]", "--set", "device.population=1",
            "--set", "train.epochs=1", "--set", "run.phases=[\"train\"]"]
    assert _run("spawn", "-o", str(path), *tiny).returncode == 0
    written = runs.attributes(path)["host"]["xla_flags"]
    # the command's own XLA:CPU settings (mortal.xla_cpu.tune) are recorded with the user's
    assert ENV.get("XLA_FLAGS", "") in written
    assert REGION_FLAG in written
    if VECTOR_FLAG not in ENV.get("XLA_FLAGS", ""):
        assert (f"{VECTOR_FLAG}=512" in written) == has_avx512()
    other = {**ENV, "XLA_FLAGS": "--xla_cpu_prefer_vector_width=128"}
    r = subprocess.run([sys.executable, "-m", "mortal", "train", "--resume", str(path)],
                       env=other, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("mortal: warning:")]
    assert len(warning) == 1 and "XLA_FLAGS" in warning[0] and "bit for bit" in warning[0]
    assert runs.status(path) == "complete"


def _one_line_error(r: subprocess.CompletedProcess, needle: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("mortal: error: "), r.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.filterwarnings("ignore:os.fork")  # the child only sets a limit, then execs
def test_full_disk_keeps_completed_epochs(tmp_path: Path) -> None:
    """A file-size limit stands in for a full disk: the run stops with one line, the file keeps
    its completed epochs and resumes once there is room."""
    small = tmp_path / "one.h5"
    assert main(["train", "-o", str(small), *TINY, "--set", "train.epochs=1", "--quiet"]) == 0
    limit = small.stat().st_size + 2048

    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    path = tmp_path / "full.h5"
    r = _run("train", "-o", str(path), *TINY, preexec_fn=cap)
    _one_line_error(r, "could not write")
    assert "--resume" in r.stderr
    done = runs.population_info(path, "train")["epochs_done"]
    assert 1 <= done < 6 and runs.status(path) == "running"
    assert len(runs.metrics(path, "train")["epoch"]) == done
    r = _run("train", "--resume", str(path))
    assert r.returncode == 0, r.stderr
    assert runs.population_info(path, "train")["epochs_done"] == 6


def test_bad_input_subprocess_one_line(tmp_path: Path) -> None:
    _one_line_error(_run("train", "-o", str(tmp_path / "x.h5"), "--set", "train.lrr=1"),
                    "did you mean 'train.lr'?")
    assert not (tmp_path / "x.h5").exists()


@pytest.fixture
def finished(tmp_path: Path) -> Path:
    path = tmp_path / "small.h5"
    assert main(["train", "-o", str(path), *TINY, "--set", "train.epochs=1", "--quiet"]) == 0
    return path


def _err(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("mortal: error: ") and needle in err, err
    assert out == "", out  # a refused run announces nothing ("writing FILE ...")


def test_bad_input_cases(finished: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "new.h5")
    # config keys and values
    _err(capsys, ["train", "-o", out, "--set", "device.presett=pcm"],
         "did you mean 'device.preset'?")
    _err(capsys, ["train", "-o", out, "--set", "device.preset=pcmm"], "unknown device preset")
    _err(capsys, ["train", "-o", out, "--set", "train.batch_size=-3"], "batch_size")
    _err(capsys, ["train", "-o", out, "--set", "device.spec.synapse.overflow_cells=3"],
         "overflow_cells must be below cells")
    bad_toml = tmp_path / "c.toml"
    bad_toml.write_text("[train]\nlr = \n")
    _err(capsys, ["train", "-o", out, "--config", str(bad_toml)], "not valid TOML")
    # missing and corrupt data files
    _err(capsys, ["train", "-o", out, "--set", "data.dataset=mnist",
                  "--set", f"data.data_dir={tmp_path / 'nowhere'}"], "nowhere")
    corrupt = tmp_path / "corrupt"
    (corrupt / "mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (corrupt / "mnist" / name).write_bytes(b"\x1f\x8b garbage")
        (corrupt / name).write_bytes(b"\x1f\x8b garbage")
    _err(capsys, ["train", "-o", out, "--set", "data.dataset=mnist",
                  "--set", f"data.data_dir={corrupt}"], "MD5")
    # NaN / Inf in data
    rng = np.random.default_rng(0)
    arrays = {f"x_{s}": rng.uniform(0, 1, (40, 64)).astype(np.float32)
              for s in ("train", "val", "test")}
    arrays.update({f"y_{s}": rng.integers(0, 10, 40) for s in ("train", "val", "test")})
    arrays["x_val"][3, 5] = np.nan
    npz = tmp_path / "nan.npz"
    np.savez(npz, **arrays)
    _err(capsys, ["train", "-o", out, "--set", f"data.dataset=\"npz:{npz}\""], "NaN")
    assert not Path(out).exists()  # nothing left behind that looks like a run
    # files that are not run files, or from a newer schema
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    _err(capsys, ["show", str(text)], "not an HDF5 run file")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    _err(capsys, ["plot", str(foreign), "-o", str(tmp_path / "p.png")], "not a mortal run file")
    _err(capsys, ["export", str(foreign), "--csv", str(tmp_path / "e")], "not a mortal run")
    newer = tmp_path / "newer.h5"
    newer.write_bytes(finished.read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["schema_version"] = runs.SCHEMA_VERSION + 1
    _err(capsys, ["show", str(newer)], "newer than this mortal reads")
    _err(capsys, ["train", "--resume", str(newer)], "newer than this mortal reads")
    # out-of-range device index
    _err(capsys, ["eval", str(finished), "--device", "7"], "out of range")
    _err(capsys, ["distill", "--teacher", str(finished), "--device", "5", "-o", out,
                  "--set", "data.train_limit=600"], "out of range")
    # resume with a different config
    _err(capsys, ["train", "--resume", str(finished), "--set", "train.lr=0.5"],
         "different config (train.lr differ)")
    # an output path that exists, unless --force
    _err(capsys, ["train", "-o", str(finished), *TINY], "exists")
    existing_png = tmp_path / "old.png"
    existing_png.write_bytes(b"\x89PNG")
    _err(capsys, ["plot", str(finished), "-o", str(existing_png)], "exists")
    # a second writer
    fd = acquire_lock(finished)
    try:
        _err(capsys, ["train", "--resume", str(finished)], "being written by another process")
        _err(capsys, ["train", "-o", str(finished), "--force", *TINY], "another process")
    finally:
        release_lock(finished, fd)


def _unclosed_copy(finished: Path, tmp_path: Path) -> Path:
    """A copy of ``finished`` that a writer opened in SWMR mode and never closed (a live or
    killed run, as far as readers can tell)."""
    unclosed = tmp_path / "unclosed.h5"
    unclosed.write_bytes(finished.read_bytes())
    leave_open = ("import h5py, os, sys; f = h5py.File(sys.argv[1], 'a', libver='latest', "
                  "locking=False); f.swmr_mode = True; f.flush(); os._exit(0)")
    subprocess.run([sys.executable, "-c", leave_open, str(unclosed)], check=True, env=ENV)
    return unclosed


def test_a_cut_short_copy_of_an_unclosed_run_is_refused(finished: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """A copy of a live or killed run (its writer never closed it, so the end-of-file check
    does not apply) cut short: SWMR reads would return zeros for the missing data; every
    reader refuses it in one line, and --resume neither starts the run over nor touches it."""
    unclosed = _unclosed_copy(finished, tmp_path)
    data = unclosed.read_bytes()
    assert data[11] != 0  # the superblock's consistency flags: a writer still has it open
    n = int(0.8 * len(data))  # past the metadata that opening the file reads
    with h5py.File(unclosed, "r", libver="latest", swmr=True, locking=False) as f:
        info = f["populations/train/epochs"].id.get_chunk_info(0)
        assert info.byte_offset + info.size > n  # the commit record's data is cut off
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[:n])
    for argv in (["show", str(cut)], ["eval", str(cut)],
                 ["export", str(cut), "--csv", str(tmp_path / "csv")],
                 ["train", "--resume", str(cut)]):
        _err(capsys, argv, "is cut short: /populations/train/")
    assert cut.read_bytes() == data[:n] and not (tmp_path / "csv").exists()
    assert runs.checkpoint(unclosed, "train")[0] == 1  # the whole unclosed file reads
    assert main(["show", str(unclosed)]) == 0


_EVERY_READER = """
import sys, time
from mortal import runs
for path in sys.argv[1:]:
    t = time.monotonic()
    try:
        for name in runs.populations(path):
            runs.metrics(path, name), runs.final(path, name), runs.checkpoint(path, name)
        runs.summary(path), runs.lineage(path)
        verdict = "read"
    except runs.RunFileCutShortError as exc:
        verdict = "checksum" if "bad checksum" in str(exc) else "cut"
    except runs.RunFileError:
        verdict = "refused"
    print(f"{verdict}:{time.monotonic() - t:.1f}")
"""


def test_a_copy_cut_inside_its_metadata_is_refused_at_once(finished: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """A copy of an unclosed run cut at any point, inside its metadata too: HDF5's SWMR reader
    would retry a block with a bad checksum for ever (its default of 100 attempts, each wait
    twice the last); every reader now refuses it within seconds (``runs.READ_ATTEMPTS``)."""
    unclosed = _unclosed_copy(finished, tmp_path)
    data = unclosed.read_bytes()
    cuts = []
    for frac in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99):
        cuts.append(tmp_path / f"cut{frac}.h5")
        cuts[-1].write_bytes(data[: int(frac * len(data))])
    # one process reads them all (h5py imported once); the timeout stands for "without end"
    r = subprocess.run([sys.executable, "-c", _EVERY_READER, *map(str, cuts)], env=ENV,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    verdicts = [line.split(":") for line in r.stdout.split()]
    assert len(verdicts) == len(cuts)
    assert all(v in ("checksum", "cut") for v, _ in verdicts), verdicts
    assert "checksum" in {v for v, _ in verdicts}, verdicts  # cuts inside the metadata
    assert max(float(s) for _, s in verdicts) < 20, verdicts
    for c in cuts:  # the run was complete, but a cut copy is not "complete, nothing to resume"
        assert main(["train", "--resume", str(c)]) == 2
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "is cut short" in err, err
        assert "nothing to resume" not in out


def test_damaged_files_and_outputs_that_cannot_be_written(finished: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    """A run file cut short is refused by every reader (HDF5's SWMR read mode would read the
    missing bytes as zeros, or retry without end); a bad teacher fails before anything is
    written, so --force keeps the old file; unwritable outputs and ignored options are one
    line each."""
    data = finished.read_bytes()
    for n in (8, 30):  # not even the superblock: h5py raised, or retried without end
        cut = tmp_path / f"cut{n}.h5"
        cut.write_bytes(data[:n])
        _err(capsys, ["show", str(cut)], f"is truncated: its {n} bytes do not hold the HDF5")
    for n in (5_000, len(data) // 2, len(data) - 1):
        cut = tmp_path / f"cut{n}.h5"
        cut.write_bytes(data[:n])
        for argv in (["show", str(cut)], ["eval", str(cut)],
                     ["export", str(cut), "--csv", str(tmp_path / f"csv{n}")],
                     ["distill", "--teacher", str(cut), "-o", str(tmp_path / "s.h5")]):
            _err(capsys, argv, f"is truncated: it has {n} of its {len(data)} bytes")
        assert not (tmp_path / "s.h5").exists() and not (tmp_path / f"csv{n}").exists()
    # a teacher device out of range, and the teacher's own file as output: the old file stays
    precious = tmp_path / "precious.h5"
    precious.write_bytes(data)
    _err(capsys, ["distill", "--teacher", str(finished), "--device", "5", "-o", str(precious),
                  "--force", "--set", "data.train_limit=600"], "out of range")
    _err(capsys, ["distill", "--teacher", str(finished), "-o", str(finished), "--force"],
         "the teacher's own run file")
    assert precious.read_bytes() == data and finished.read_bytes() == data
    _err(capsys, ["distill", "--teacher", str(finished), "--device", "5", "-o",
                  str(tmp_path / "new.h5")], "out of range")
    _err(capsys, ["distill", "--teacher", str(finished), "--set", "distill.teacher=5", "-o",
                  str(tmp_path / "new.h5")], "out of range")  # the config's teacher is used
    assert not (tmp_path / "new.h5").exists()  # nothing left that asks to be resumed
    _err(capsys, ["demo", "-o", str(tmp_path / "d.h5"), *TINY, "--set", "distill.teacher=2"],
         "distill.teacher = 2 is out of range")
    # outputs that cannot be written
    _err(capsys, ["train", "-o", str(finished / "x.h5"), *TINY], "is a file, not a folder")
    _err(capsys, ["export", str(finished), "--csv", str(finished / "csv")],
         "is a file, not a folder")
    _err(capsys, ["export", str(finished), "--csv", str(finished)], "is a file; name a folder")
    if Path("/proc/self").is_dir():  # a folder nobody may create files in
        _err(capsys, ["train", "-o", "/proc/mortal-test.h5", *TINY],
             "check the path, its permissions and the free space")
    _err(capsys, ["plot", str(finished), "-o", str(tmp_path / "p.h5")], ".png, .pdf or .svg")
    # options that would be ignored
    _err(capsys, ["train", "-o", str(tmp_path / "t.h5"), *TINY, "--mesh", "-1"], "--mesh -1")
    _err(capsys, ["train", "-o", str(tmp_path / "t.h5"), *TINY, "--coordinator", "h:1"],
         "add --distributed")
    _err(capsys, ["train", "-o", str(tmp_path / "t.h5"), *TINY,
                  "--set", 'run.phases=["trian"]'], "drop --set run.phases")
    _err(capsys, ["devices", "-n", "2"], "add --preset NAME")
    _err(capsys, ["spawn", "-o", str(tmp_path / "t.h5"), "--set", 'run.phases=["trian"]'],
         "drop --set run.phases")
    _err(capsys, ["train", "--resume", str(tmp_path)], "it is a directory")
    _err(capsys, ["train", "--data-dir", "x"], "(see 'mortal train --help')")
    _err(capsys, ["train", "-o", str(tmp_path / "t.h5"), "--config", str(tmp_path)],
         "is a directory")
    _err(capsys, ["show", str(tmp_path)], "is a directory")
    assert not (tmp_path / "t.h5").exists()


def test_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """XLA's RESOURCE_EXHAUSTED (a population too large for memory) is one line, exit 2;
    other runtime errors are bugs and keep their traceback."""
    import jax

    from mortal import cli

    def exhausted(args: object) -> int:
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 592 GB")

    monkeypatch.setattr(cli, "_cmd_show", exhausted)
    _err(capsys, ["show", "x.h5"], "out of memory")

    def bug(args: object) -> int:
        raise RuntimeError("an internal error")

    monkeypatch.setattr(cli, "_cmd_show", bug)
    with pytest.raises(RuntimeError, match="internal"):
        main(["show", "x.h5"])


def test_a_closed_pipe_is_not_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``mortal show RUN | head -1``: the reader stopped early; exit 0 and say nothing (a broken
    pipe is an OSError, but not a file-system problem)."""
    from mortal import cli

    def closed(args: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "_cmd_show", closed)
    with open(tmp_path / "stdout", "w") as pipe:  # stands in for the pipe: its fd is redirected
        monkeypatch.setattr(sys, "stdout", pipe)
        assert main(["show", "x.h5"]) == 0
    assert capsys.readouterr().err == ""


def test_export_leaves_no_partial_folder(finished: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure half-way through an export (a full disk) leaves neither the folder nor its
    staging folder behind; a finished export holds every file."""
    from mortal import export

    calls = []
    real = export._write_csv

    def failing(path: Path, header: list[str], rows: list[list[object]]) -> Path:
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(path))
        return real(path, header, rows)

    monkeypatch.setattr(export, "_write_csv", failing)
    base = tmp_path / "exports"
    base.mkdir()
    with pytest.raises(OSError, match="No space"):
        export.export_csv(finished, base / "csv")
    assert list(base.iterdir()) == []
    monkeypatch.setattr(export, "_write_csv", real)
    written = export.export_csv(finished, base / "csv")
    assert sorted(p.name for p in (base / "csv").iterdir()) == sorted(p.name for p in written)
    assert len(written) == 5 and [p.name for p in base.iterdir()] == ["csv"]


def test_two_processes_write_the_same_run_as_one(reference: Path, tmp_path: Path) -> None:
    """jax.distributed with CPU collectives on 127.0.0.1: two processes, one device each, split
    the population; process 0 alone writes the file, whose content equals the one-process run."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "two.h5"
    procs = [_mortal("demo", "-o", str(path), *TINY, "--quiet", "--distributed",
                     "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)) for i in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    assert "2 accelerators" in outs[0][0]
    # process 1 computes but neither prints nor writes (Gloo's own connection notes aside)
    assert not [ln for ln in outs[1][0].splitlines() if ln.strip() and "[Gloo]" not in ln]
    _assert_identical(reference, path)
    assert runs.attributes(path)["host"]["jax_devices"]  # written once, by process 0


def test_processes_given_different_settings_refuse_to_run(tmp_path: Path) -> None:
    """Two processes of one distributed run with other seeds: each says so in one line and
    exits with 2, and no run file is written (they mixed silently into one file before)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "mixed.h5"
    procs = [_mortal("train", "-o", str(path), *TINY, "--seed", str(3 + i), "--quiet",
                     "--distributed", "--coordinator", f"127.0.0.1:{port}",
                     "--num-processes", "2", "--process-id", str(i)) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 2, err[-2000:]
        lines = [ln for ln in err.splitlines() if ln.startswith("mortal: ")]
        assert len(lines) == 1 and "given different settings" in lines[0], err[-2000:]
        assert "Traceback" not in err
    assert not path.exists() and not list(tmp_path.iterdir())


def test_a_run_refused_by_one_process_stops_the_others_in_one_line(tmp_path: Path) -> None:
    """Process 0 refuses to overwrite an existing file: it says why, process 1 says that
    process 0 refused, both exit with 2 at once (process 1 waited for a collective that never
    came, then died with a Gloo traceback), and the file is untouched."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "exists.h5"
    path.write_bytes(b"not yours")
    procs = [_mortal("train", "-o", str(path), *TINY, "--quiet", "--distributed",
                     "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                     "--process-id", str(i)) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    needles = ("exists", "process 0 of this distributed run refused it")
    for p, (_out, err), needle in zip(procs, outs, needles, strict=True):
        assert p.returncode == 2, err[-2000:]
        lines = [ln for ln in err.splitlines() if ln.startswith("mortal: ")]
        assert len(lines) == 1 and needle in lines[0], err[-2000:]
        assert "Traceback" not in err
    assert path.read_bytes() == b"not yours"


def test_plot_of_a_run_before_its_first_validation(tmp_path: Path) -> None:
    """A live file whose only committed epoch has no validation yet still plots."""
    from mortal import cli_jobs
    from mortal.config import load_config
    from mortal.plots import plot_run
    from mortal.runlog import RunWriter

    cfg = load_config(sets=["data.train_limit=200", "device.widths=[74,8,8]",
                            "device.population=2", "train.readout_from=0",
                            "run.phases=[\"train\"]"])
    job = cli_jobs.Job(cfg, cli_jobs.Reporter(progress=False, quiet=True))
    path = tmp_path / "early.h5"
    with RunWriter.create(path, attributes=job.attributes("test"),
                          populations=job.plans()) as w:
        w.append_epoch("train", 1, 10, 1.0, {"ff_loss": np.ones(2)})
        out = plot_run(path, tmp_path / "early.png")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_bfloat16_products_reach_every_population_of_a_run(reference: Path,
                                                           tmp_path: Path) -> None:
    """``device.matmul_dtype = bfloat16``: trained devices and students compute their products
    from bfloat16 operands, the run file's recipes say so, and the learned weights differ from
    the float32 reference run of the same seed (the same fab draws, other arithmetic)."""
    out = tmp_path / "bf16.h5"
    assert main(["demo", "-o", str(out), *TINY, "--set", "device.matmul_dtype=bfloat16",
                 "--quiet"]) == 0
    for name in ("train", "students"):
        assert runs.load_device(out, 0, name).spec.matmul_dtype == "bfloat16"
        fresh, ref = runs.load_device(out, 0, name), runs.load_device(reference, 0, name)
        assert np.array_equal(np.asarray(fresh.state.weights[0]),
                              np.asarray(ref.state.weights[0]))  # the same instance
        trained = runs.load_device(out, 0, name, state="checkpoint")
        assert not np.array_equal(np.asarray(trained.state.weights[0]),
                                  np.asarray(runs.load_device(reference, 0, name,
                                                              state="checkpoint")
                                             .state.weights[0]))
    assert np.isfinite(runs.final(out, "students")["test_agreement"]).all()
    assert "matmul_dtype = \"bfloat16\"" in runs.config_text(out)


def test_a_readout_refit_is_logged_as_epochs_that_measure_only(tmp_path: Path) -> None:
    """``train.readout_refit_epochs``: the last epochs of a run refit the one-pass readout; the
    log shows them as epochs without FF (``ff_loss`` NaN) whose readout still learns."""
    path = tmp_path / "refit.h5"
    assert main(["train", "-o", str(path), *TINY, "--set", "train.epochs=3",
                 "--set", "train.readout_refit_epochs=1", "--quiet"]) == 0
    m = runs.metrics(path, "train")
    assert runs.status(path) == "complete" and list(m["epoch"]) == [1, 2, 3]
    assert np.all(np.isfinite(m["ff_loss"][:2])) and np.all(np.isnan(m["ff_loss"][2]))
    assert np.all(m["readout_acc"][2] > 0.3)  # ten classes: chance is 0.1
    assert np.all(np.isfinite(m["val_softmax_error"][-1]))
