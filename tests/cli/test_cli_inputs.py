"""The command line's inputs: seeds, npz data, teachers (unfinished, retrained, moved), resumes
with a config file, flags that would be ignored. Every mistake is one line, exit code 2.

Run files are written here without training (``_train_file``: the template state as every
checkpoint), and the distillations' epochs are stubbed (``_stub_epochs``): what is tested is
what the command line checks and records before and around the epochs, which the end-to-end
tests of ``test_runs_cli.py`` run for real.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mortal import cli_jobs, runs
from mortal.cli import main
from mortal.config import ConfigError, load_config, to_toml
from mortal.data import DataError
from mortal.runlog import RunWriter

SMALL = ["data.train_limit=100", "data.eval_limit=20", "device.population=2",
         "train.readout_from=0", "train.epochs=2", "distill.epochs=1", "distill.students=2",
         "run.chunk=1"]
WIDTHS = "device.widths=[74,8,8]"


def _sets(*items: str) -> list[str]:
    return [a for item in items for a in ("--set", item)]


SETS = _sets(*SMALL, WIDTHS)


def _train_file(path: Path, *, sets: tuple[str, ...] = (WIDTHS,), done: int = 2,
                val: bool = True, finish: bool = True, shift: float = 0.0) -> Path:
    """A 'mortal train' run file of 2 devices and 2 planned epochs, without the training:
    ``done`` epochs committed, each with the fresh state as checkpoint (plus ``shift`` on its
    float leaves: another teacher), validation rows if ``val``, final results and the complete
    status if ``finish`` (else: as a killed run leaves it)."""
    cfg = load_config(sets=[*SMALL, *sets, "run.phases=[\"train\"]"])
    job = cli_jobs.Job(cfg, cli_jobs.Reporter(progress=False, quiet=True))
    leaves = {k: v + np.asarray(shift, v.dtype) if v.dtype.kind == "f" else v
              for k, v in cli_jobs._checkpoint_leaves(job.populations["train"]["template"]
                                                      ).items()}
    with RunWriter.create(path, attributes=job.attributes("mortal train (test file)"),
                          populations=job.plans(), force=True) as w:
        for e in range(1, done + 1):
            m = {"ff_loss": np.ones(2)}
            if val:
                m["val_goodness_error"] = np.array([0.5, 0.25])
            w.append_epoch("train", e, 5 * e, float(e), m, leaves)
        if finish:
            w.write_final("train", {"test_goodness_error": np.full(2, 0.3),
                                    "test_softmax_error": np.full(2, 0.3)})
            w.finish()
    return path


def _stub_epochs(monkeypatch: pytest.MonkeyPatch,
                 then: Callable[[cli_jobs.Job, Any], None] | None = None) -> list[str]:
    """Replace a job's epochs: ``then`` (default: interrupt it, as Ctrl-C would, before its
    first epoch), after reading the teacher the way the distillation does. Returns the names
    of the teachers read."""
    seen: list[str] = []

    def execute(job: cli_jobs.Job, writer: Any) -> None:
        if "distill" in job.cfg.run.phases and "train" not in job.cfg.run.phases:
            seen.append(job._teacher(1)[1])
        if then is None:
            raise KeyboardInterrupt
        then(job, writer)

    monkeypatch.setattr(cli_jobs.Job, "execute", execute)
    return seen


def _finish(job: cli_jobs.Job, writer: Any) -> None:
    writer.finish()


def _interrupted(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Start a run whose epochs ``_stub_epochs`` interrupts; its error line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "interrupted;" in err and "--resume" in err, err
    return err


def _err(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """``argv`` is refused in one line naming ``needles``, having printed nothing else."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("mortal: error: "), err
    for needle in needles:
        assert needle in err, err
    assert out == "", out
    return err


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished teacher run file (do not change it: other tests make their own)."""
    return _train_file(tmp_path_factory.mktemp("teacher") / "t1.h5")


# 1 ---------------------------------------------------------------------------------------------


def test_a_teacher_killed_before_its_first_validation(tmp_path: Path, monkeypatch:
                                                      pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    killed = _train_file(tmp_path / "k.h5", done=1, val=False, finish=False)
    assert runs.status(killed) == "running"
    out = tmp_path / "dk.h5"
    _err(capsys, ["distill", "--teacher", str(killed), "-o", str(out), *SETS],
         "no validation measurement to pick the best device from", "--device N")
    assert not out.exists()
    # a named device is taken, with a warning that the teacher run is unfinished
    _stub_epochs(monkeypatch, _finish)
    assert main(["distill", "--teacher", str(killed), "--device", "1", "-o", str(out), *SETS,
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mortal: warning: "), err
    assert "is unfinished" in err and "epoch-1 checkpoint, of 2 planned" in err
    # a finished teacher: no warning
    done = _train_file(tmp_path / "t.h5")
    assert main(["distill", "--teacher", str(done), "-o", str(tmp_path / "d.h5"), *SETS,
                 "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# 2 ---------------------------------------------------------------------------------------------


def test_seeds_outside_what_jax_and_numpy_take_are_refused(
        teacher: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the output exists: without the seed check, these would stop there instead
    for seed in ("99999999999999999999", "-1", str(2**32)):
        _err(capsys, ["train", "-o", str(teacher), "--seed", seed], "seed must be an integer "
             "in [0, 2**32 - 1")
        _err(capsys, ["eval", str(teacher), "--seed", seed, "--device", "9"], "seed must be")
        _err(capsys, ["devices", "--preset", "ideal", "-n", "0", "--seed", seed],
             "seed must be")
    _err(capsys, ["distill", "--teacher", str(teacher), "-o", str(teacher), "--seed", "-1"],
         "seed must be")
    for bad in ("-1", str(2**32), "99999999999999999999"):
        with pytest.raises(ConfigError, match=r"run.seed must be an integer in \[0, 2\*\*32"):
            load_config(sets=[f"run.seed={bad}"])
    assert load_config(seed=2**32 - 1).run.seed == 2**32 - 1


# 3 ---------------------------------------------------------------------------------------------


def test_a_distillation_resumes_from_another_folder(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    _train_file(here / "tt.h5")
    monkeypatch.chdir(here)
    _stub_epochs(monkeypatch)  # interrupted before its first epoch
    err = _interrupted(capsys, ["distill", "--teacher", "tt.h5", "-o", "d3.h5", *SETS])
    assert "continue with 'mortal distill --resume d3.h5'" in err
    # the teacher is recorded by its absolute path
    assert runs.config(here / "d3.h5")["distill"]["teacher_run"] == str(here / "tt.h5")
    monkeypatch.chdir(elsewhere)
    seen = _stub_epochs(monkeypatch, _finish)
    assert main(["distill", "--resume", str(here / "d3.h5"), "--quiet"]) == 0
    assert seen == [f"{here / 'tt.h5'}:train/1"]
    # a file that recorded the path as typed (before it was stored absolute), killed before
    # its first epoch
    monkeypatch.chdir(here)
    old = here / "old.h5"
    cfg = load_config(sets=[*SMALL, WIDTHS, "run.phases=[\"distill\"]",
                            "distill.teacher_run=\"tt.h5\""])
    job = cli_jobs.Job(cfg, cli_jobs.Reporter(progress=False, quiet=True))
    with RunWriter.create(old, attributes=job.attributes("mortal distill (old file)"),
                          populations=job.plans()):
        pass
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    # the teacher gone: one line before the run is announced, naming it a teacher run
    os.replace(here / "tt.h5", here / "moved.h5")
    _err(capsys, ["distill", "--resume", str(old)], "teacher run tt.h5, which", "does not exist")
    # there: found beside the students' file
    os.replace(here / "moved.h5", here / "tt.h5")
    assert main(["distill", "--resume", str(old), "--quiet"]) == 0
    assert seen[-1] == f"{here / 'tt.h5'}:train/1"


def test_a_retrained_teacher_is_refused_on_resume(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    t = _train_file(tmp_path / "t.h5")
    d = tmp_path / "d.h5"
    _stub_epochs(monkeypatch)
    _interrupted(capsys, ["distill", "--teacher", str(t), "-o", str(d), *SETS])
    assert runs.attributes(d)["teacher_fingerprint"].startswith("sha256:")
    _train_file(t, shift=0.5)  # 'mortal train -o t.h5 --force' with other results
    _stub_epochs(monkeypatch, _finish)
    _err(capsys, ["distill", "--resume", str(d)], f"teacher run {t} has changed since")
    assert runs.status(d) == "running"
    _train_file(t)  # retrained to the same bits: the same teacher
    assert main(["distill", "--resume", str(d), "--quiet"]) == 0


def test_resume_refuses_another_teacher(teacher: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "d2.h5"
    _stub_epochs(monkeypatch)
    _interrupted(capsys, ["distill", "--teacher", str(teacher), "-o", str(d), *SETS])
    _err(capsys, ["distill", "--resume", str(d), "--device", "1", "--teacher",
                  "/nonexistent.h5"], "from the teacher it recorded; drop --teacher and --device")
    _err(capsys, ["distill", "--resume", str(d), "--device", "0"], "drop --device")


# 4 ---------------------------------------------------------------------------------------------


def test_resume_with_the_config_file_it_started_with(teacher: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    big = tmp_path / "big.toml"  # 'mortal config --set ... > big.toml': every key, all phases
    big.write_text(to_toml(load_config(sets=[*SMALL, WIDTHS])))
    other = tmp_path / "other.toml"
    other.write_text(to_toml(load_config(sets=[*SMALL, WIDTHS, "train.lr=0.5"])))
    # a train run killed after its last epoch's results, before it was marked complete
    r = _train_file(tmp_path / "r.h5", finish=False)
    _err(capsys, ["train", "--resume", str(r), "--config", str(other)],
         "different config (train.lr differ)")
    assert main(["train", "--resume", str(r), "--config", str(big), "--quiet"]) == 0
    assert runs.status(r) == "complete"
    # a distillation started with the file (and --device), resumed with it
    d = tmp_path / "d.h5"
    _stub_epochs(monkeypatch)
    _interrupted(capsys, ["distill", "--teacher", str(teacher), "--device", "1", "-o", str(d),
                          "--config", str(big)])
    _stub_epochs(monkeypatch, _finish)
    _err(capsys, ["distill", "--resume", str(d), "--config", str(big),
                  "--set", "distill.temperature=5"], "(distill.temperature differ)")
    _err(capsys, ["distill", "--resume", str(d), "--config", str(big),
                  "--set", "device.widths=[74,9,9]"], "(device.widths differ)")
    assert main(["distill", "--resume", str(d), "--config", str(big), "--quiet"]) == 0


# 5 ---------------------------------------------------------------------------------------------


def _arrays(n: int = 30, width: int = 64, classes: int = 10) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {f"x_{s}": rng.uniform(0, 1, (n, width)).astype(np.float32)
           for s in ("train", "val", "test")}
    out.update({f"y_{s}": np.arange(n) % classes for s in ("train", "val", "test")})
    return out


def _bad(change: Callable[[dict[str, np.ndarray]], None]) -> dict[str, np.ndarray]:
    a = _arrays()
    change(a)
    return a


@pytest.mark.parametrize(("arrays", "needle"), [
    (_bad(lambda a: a.update(x_val=np.zeros((0, 64), np.float32), y_val=np.zeros(0, int))),
     "the val split is empty"),
    (_bad(lambda a: a.update(y_train=np.array(["cat", "dog"] * 15))),
     "y_train must hold class indices"),
    (_bad(lambda a: a.update(x_test=a["x_test"][:, :60])),
     "x_test images are 60 pixels wide but x_train's are 64"),
    (_bad(lambda a: a.update(y_train=np.stack([a["y_train"]] * 2, 1))),
     "y_train must be 1-D"),
    (_bad(lambda a: a.update(y_val=a["y_val"] - 1)), "y_val holds the label -1"),
    (_bad(lambda a: a.update(y_test=a["y_test"] + 0.5)), "y_test must hold class indices"),
    (_bad(lambda a: a.update(x_train=np.array([["a"] * 64] * 30))), "x_train must hold numbers"),
    (_bad(lambda a: a.pop("y_test")), "lacks y_test"),
    (_bad(lambda a: a.update(y_train=a["y_train"][:-1])), "30 images but y_train has 29"),
    ({**_arrays(classes=1)}, "a classifier needs at least two classes"),
])
def test_npz_data_is_checked_whole_before_use(arrays: dict[str, np.ndarray], needle: str,
                                              tmp_path: Path) -> None:
    f = tmp_path / "d.npz"
    np.savez(f, **arrays)
    with pytest.raises(DataError, match=re.escape(needle)):
        cli_jobs._load_npz(str(f))


def test_npz_data_errors_are_one_line(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros((3, 4)))
    out = tmp_path / "new" / "r.h5"
    _err(capsys, ["train", "-o", str(out), "--set", f"data.dataset=\"npz:{npy}\""],
         "holds one array (an .npy file), not an .npz archive")
    text = tmp_path / "notes.npz"
    text.write_text("not a zip")
    _err(capsys, ["train", "-o", str(out), "--set", f"data.dataset=\"npz:{text}\""],
         "is not a readable .npz archive")
    assert not (tmp_path / "new").exists()  # a refused run leaves no folder either
    good = tmp_path / "ok.npz"
    np.savez(good, **_arrays())
    ds = cli_jobs._load_npz(str(good))
    assert (ds.n_classes, ds.image_shape, ds.y_val.dtype) == (10, (8, 8), np.int32)


# 6 ---------------------------------------------------------------------------------------------


def test_a_teacher_trained_on_other_data_names_that_data(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    data = tmp_path / "three.npz"
    np.savez(data, **_arrays(width=16, classes=3))
    tn = _train_file(tmp_path / "tn.h5", sets=(f"data.dataset=\"npz:{data}\"",
                                               "train.n_classes=3", "device.widths=[19,8,8]"))
    fix = (f"was trained on other data; distil on the same: --set data.dataset=npz:{data} "
           "--set train.n_classes=3")
    err = _err(capsys, ["distill", "--teacher", str(tn), "-o", str(tmp_path / "x.h5"),
                        *_sets(*SMALL)], "device.widths[0] = 19 (the teacher's)", fix)
    assert "device.widths=[74" not in err
    _err(capsys, ["distill", "--teacher", str(tn), "-o", str(tmp_path / "x.h5"),
                  *_sets(*SMALL, WIDTHS)], "the teacher's widths [19, 8, 8] differ", fix)


# 7 ---------------------------------------------------------------------------------------------


def test_eval_of_one_device_reports_that_device(teacher: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    def measured(*a: Any, **k: Any) -> dict[str, np.ndarray]:
        return {"goodness_error": np.array([0.1, 0.5]), "softmax_error": np.array([0.2, 0.4])}

    monkeypatch.setattr(cli_jobs, "_eval", measured)
    assert main(["eval", str(teacher), "--device", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "device 1 goodness error 50.00%", last
    assert main(["eval", str(teacher)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "median goodness error 30.00%"


# 8 ---------------------------------------------------------------------------------------------


def test_a_refused_run_creates_no_folder(teacher: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("train", "spawn", "demo", "distill"):
        out = tmp_path / "newdir" / "sub" / "a.h5"
        _err(capsys, [command, "-o", str(out), "--set", "train.lr=abc",
                      *(["--teacher", str(teacher)] if command == "distill" else [])],
             "train.lr must be a number")
        assert not (tmp_path / "newdir").exists(), command
    _err(capsys, ["train", "-o", str(tmp_path / "newdir" / "a.h5"), *SETS,
                  "--set", "data.dataset=\"npz:/no/such.npz\""], "does not exist")
    assert not (tmp_path / "newdir").exists()


# 9 ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "needle"), [
    (["spawn", "-o", "{tmp}/s.h5", "--mesh", "2"], "unrecognized arguments: --mesh 2"),
    (["spawn", "-o", "{tmp}/s.h5", "--distributed"], "unrecognized arguments: --distributed"),
    (["spawn", "-o", "{tmp}/s.h5", "--coordinator", "h:1"], "unrecognized arguments"),
    (["devices", "--layer", "2"], "--layer needs a recipe: add --preset NAME"),
    (["devices", "--seed", "2"], "--seed needs a recipe"),
    (["devices", "--preset", "ideal", "--layer", "1"], "--layer only applies to a population"),
    (["devices", "--preset", "ideal", "-n", "2", "--widths", "4", "3", "--layer", "0"],
     "--layer and --force apply to the plot: add --plot FILE"),
    (["demo", "-o", "{tmp}/d.h5", "--set", "run.phases=[\"distill\"]", *SETS],
     "--set distill.teacher_run=RUN.h5"),
])
def test_flags_that_would_be_ignored_are_refused(argv: list[str], needle: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _err(capsys, [a.format(tmp=tmp_path) for a in argv], needle)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("item", [
    "train.weight_decay=inf", "train.temperature=inf", "train.label_strength=inf",
    "train.threshold=inf", "train.readout_lr=inf", "train.readout_decay=inf",
    "train.accumulate=inf", "train.readout_temperature=inf", "train.layer_lr_scale=[1, inf]",
    "train.layer_lr_scale=[1, -1]",
])
def test_infinite_learner_settings_are_refused(item: str) -> None:
    with pytest.raises(ConfigError, match=item.split("=")[0].split(".")[1] + " must"):
        load_config(sets=[item])


@pytest.mark.parametrize(("item", "needle"), [
    ("device.preset=foo", "unknown device preset 'foo'"),
    ("data.dataset=foo", "unknown dataset 'foo' (data.dataset)"),
    ("device.spec.read.gain=-3", "read.gain must be a finite positive number"),
    ("distill.preset=bar", "unknown device preset 'bar'"),
])
def test_config_refuses_what_a_run_would_refuse(item: str, needle: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``mortal config`` prints no TOML that ``train`` would then refuse: the dataset's name and
    the recipes are checked as a run builds them, in one line."""
    _err(capsys, ["config", "--set", item], needle)
    assert main(["config", "--set", "data.dataset=npz:/not/read/yet.npz"]) == 0  # read at run
    assert "npz:/not/read/yet.npz" in capsys.readouterr().out
