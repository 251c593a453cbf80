"""The benchmark scripts refuse a bad ``--set``, a missing data directory or an unreadable
teacher state in one line, before any training starts.

They run in subprocesses as a user would start them; every refusal happens while the command
line is read (or, for ``distill_benchmarks.py``, right after the embedded digits are loaded), so
each call takes the few seconds of importing JAX.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._scripts import ROOT, SCRIPTS, import_script

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], env=ENV,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def _last_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.mark.parametrize(("script", "args", "says"), [
    ("ff_benchmarks.py", ["digits-ideal", "--set", "label_strength"], "write --set KEY=VALUE"),
    ("ff_benchmarks.py", ["digits-ideal", "--set", "epochs=3"], "use --epochs"),
    ("ff_benchmarks.py", ["digits-ideal", "--set", "lr=-1"], "lr"),
    ("ff_benchmarks.py", ["digits-ideal", "--set", "readout_from=5"], "digits-ideal"),
    ("ff_benchmarks.py", ["digits-ideal", "--epochs", "4", "--set", "readout_refit_epochs=4"],
     "readout_refit_epochs must lie in [0, epochs)"),
    ("ff_benchmarks.py", ["digits-rram", "--cells", "0"],
     "--input-bound or --overflow-cells with digits-rram: invalid device recipe: layer 0 "
     "synapse.cells"),
    ("ff_benchmarks.py", ["digits-rram", "--cells", "2", "--overflow-cells", "2"],
     "layer 0 synapse.overflow_cells must be below cells (2)"),
    ("ff_benchmarks.py", ["digits-rram", "--input-bound", "-1"],
     "layer 0 read.input_bound must be a finite positive number, got -1.0"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--set", "n_classes=3"], "use --dataset"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--set", "nonsense=1"], "nonsense"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--set", "readout_from=5"],
     "--dataset digits"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--goodness-kl-start", "0.5"],
     "goodness_kl_start has no effect without goodness_kl_weight > 0"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--student-cells", "0"],
     "--student-cells: invalid device recipe: layer 0 synapse.cells must be an integer >= 1"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--student-input-bound", "0"],
     "--student-input-bound: invalid device recipe: layer 0 read.input_bound must be"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--students", "4", "--student-slice",
                               "2:5", "--experiments", "one-to-many"],
     "--student-slice 2:5: needs 0 <= FIRST < LAST <= --students (4)"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--student-slice", "two"],
     "--student-slice needs --experiments one-to-many"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--student-slice", "1-2",
                               "--experiments", "one-to-many"],
     "--student-slice: write FIRST:LAST (two integers), got '1-2'"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--controls-only"],
     "--controls-only needs --experiments one-to-many and no --no-controls"),
    ("distill_benchmarks.py", ["--dataset", "digits", "--experiments", "one-to-many",
                               "--controls-only"],
     "has no one-to-many row of these students (students, epochs, seed, slice, cells, DAC"),
])
def test_a_bad_set_is_one_line_and_exit_2(tmp_path: Path, script: str, args: list[str],
                                          says: str) -> None:
    p = _script(script, *args, "--out", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert says in _last_line(p.stderr), p.stderr
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(("script", "args"), [
    ("ff_benchmarks.py", ["digits-ideal", "mnist-ideal"]),
    ("distill_benchmarks.py", ["--dataset", "mnist"]),
    ("distill_sweep.py", ["--dataset", "mnist"]),
    ("rram_ablation.py", []),
    ("rram_write_traffic.py", []),
])
def test_a_missing_data_directory_is_one_line_before_any_training(
        tmp_path: Path, script: str, args: list[str]) -> None:
    out = tmp_path / "out"
    p = _script(script, *args, "--data-dir", str(tmp_path / "nowhere"), "--out", str(out))
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert _last_line(p.stderr) == p.stderr.strip()  # the whole message is one line
    assert _last_line(p.stderr).startswith(f"{script}: missing data file "), p.stderr
    assert str(tmp_path / "nowhere") in p.stderr
    # ff_benchmarks reads every dataset first: the digits experiment listed before MNIST did
    # not train and write its result
    assert not out.exists() or not list(out.iterdir())


def test_an_unreadable_teacher_state_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "teacher.npz"
    bad.write_text("not an array file")
    p = _script("distill_benchmarks.py", "--dataset", "digits", "--teacher-state", str(bad),
                "--out", str(tmp_path / "out"))
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert _last_line(p.stderr).startswith(f"--teacher-state {bad}: not a device state"), p.stderr


def test_overrides_are_typed_like_the_command_line() -> None:
    parse_overrides = import_script("_overrides").parse_overrides
    parser = argparse.ArgumentParser()
    got = parse_overrides(["label_strength=2", " weight_decay = 0.002", "layer_lr_scale=[1,2,3]"],
                          parser)
    assert got == {"label_strength": 2.0, "weight_decay": 0.002,
                   "layer_lr_scale": (1.0, 2.0, 3.0)}
    assert isinstance(got["label_strength"], float)
    assert parse_overrides([], parser) == {}


@pytest.mark.parametrize("script", ["device_agreement.py", "readout_refit.py"])
def test_an_unreadable_saved_state_is_one_line(tmp_path: Path, script: str) -> None:
    bad = tmp_path / "devices.npz"
    bad.write_text("not an array file")
    p = _script(script, str(bad), "--out", str(tmp_path / "out.json"))
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert _last_line(p.stderr).startswith(f"state {bad}: not a device state"), p.stderr
    assert not (tmp_path / "out.json").exists()


def test_agreement_between_devices_counts_same_answers_and_who_was_right() -> None:
    agreement_table = import_script("_agreement").agreement_table
    import numpy as np

    y = np.array([0, 1, 2, 3])
    preds = np.array([[0, 1, 2, 3],    # always right
                      [0, 1, 2, 0],    # wrong on the last image
                      [0, 2, 2, 1]])   # wrong on images 1 and 3
    t = agreement_table(preds, y)
    a = np.asarray(t["agreement"])
    np.testing.assert_allclose(a, [[1, 0.75, 0.5], [0.75, 1, 0.5], [0.5, 0.5, 1]])
    one = np.asarray(t["disagreements_one_right"])
    assert one[0, 1] == 1.0 and one[0, 2] == 1.0  # device 0 is right wherever it differs
    assert one[1, 2] == 0.5  # image 1: device 1 right; image 3: both wrong, differently
    assert t["pair_agreement_median"] == 0.5
    assert t["pair_agreement_min"] == 0.5 and t["pair_agreement_max"] == 0.75


def test_the_pulse_clip_diagnostic_counts_what_the_clip_cuts() -> None:
    rwt = import_script("rram_write_traffic")
    import jax
    import jax.numpy as jnp
    import numpy as np

    import devices

    spec = devices.preset("rram", (4, 3)).replace_in_layers("synapse", cells=2)
    syn = spec.layer(0).synapse
    dev = devices.fabricate(spec, jax.random.key(0))
    # a cell takes cells × request: asked for 2·(20 dw) = 40 pulses, 9 are cut; 2·(5 dw) = 10 pass
    req = np.zeros((5, 3), np.float32)
    req[0, 0], req[1, 1] = 20 * syn.dw_min, -5 * syn.dw_min
    rwt._CLIP_LOG.clear()
    new = rwt._clip_recording_program(dev, (jnp.asarray(req),), key=jax.random.key(1))
    jax.effects_barrier()
    [[(clipped, cut)]] = rwt._CLIP_LOG
    assert clipped == pytest.approx(1 / 15)
    assert cut == pytest.approx((40 - syn.max_pulses) / 50)
    # and the device is programmed exactly as devices.program would
    ref = devices.program(dev, (jnp.asarray(req),), key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(new.state.weights[0]),
                                  np.asarray(ref.state.weights[0]))
    # one overflow cell takes up to max_pulses more: 4·(20 dw) = 80 pulses lose 80 − 2·31
    spec = devices.preset("rram", (4, 3)).replace_in_layers("synapse", cells=4, overflow_cells=1)
    dev = devices.fabricate(spec, jax.random.key(0))
    rwt._CLIP_LOG.clear()
    rwt._clip_recording_program(dev, (jnp.asarray(req),), key=jax.random.key(1))
    jax.effects_barrier()
    [[(clipped, cut)]] = rwt._CLIP_LOG
    assert clipped == pytest.approx(1 / 15)
    assert cut == pytest.approx((80 - 2 * syn.max_pulses) / 100)
    rows = rwt.clip_windows([[(0.1, 0.2), (0.0, 0.4)], [[0.3, 0.4], [0.2, 0.0]],
                             [[0.5, 0.0], [0.1, 0.1]]], 2)
    assert [r["steps"] for r in rows] == [[0, 2], [2, 3]]
    assert rows[0]["clipped_synapses"] == [0.2, 0.1] and rows[0]["clipped_pulses"] == [0.3, 0.2]
    assert rows[1]["clipped_synapses"] == [0.5, 0.1] and rows[1]["clipped_pulses"] == [0.0, 0.1]


def test_the_readout_refit_fits_frozen_measured_features_with_the_learners_rule() -> None:
    readout_refit = import_script("readout_refit")
    import dataclasses

    import jax
    import jax.numpy as jnp
    import numpy as np

    import devices
    from mortal import ff

    cfg = ff.FFConfig(n_classes=3, batch_size=10, readout_from=0)
    pop = devices.spawn(devices.preset("ideal", (12, 8)), 2, jax.random.key(0))
    state = ff.init_population(pop, cfg, 1)
    x = jax.random.uniform(jax.random.key(1), (30, 12))
    f = readout_refit.features(state, x, cfg, seed=0)
    assert f.shape == (2, 30, 9)
    m = ff.BENCH.measure(pop[1], ff.embed_neutral(x, cfg))
    np.testing.assert_allclose(f[1], np.asarray(ff.readout_features(m, cfg)), rtol=1e-6)
    # features whose common part dwarfs the class signal: the centred rule learns them in a few
    # epochs, the plain one at this rate does not
    rng = np.random.default_rng(0)
    y = np.arange(300) % 3
    feats = rng.normal(size=(300, 6)).astype(np.float32) + 20.0
    feats[np.arange(300), y] += 3.0
    feats = jnp.asarray(np.concatenate([feats, np.ones((300, 1), np.float32)], axis=1))

    def error(w: jax.Array) -> dict[str, float]:
        return {"train_error": float(np.mean(np.argmax(np.asarray(feats @ w), -1) != y))}

    runs = {c: readout_refit.refit(feats, jnp.asarray(y), dataclasses.replace(
        cfg, readout_center=c), 0.1, 3, 0, error) for c in (False, True)}
    assert len(runs[True]) == 3
    assert runs[True][-1]["train_error"] < 0.1
    assert runs[False][-1]["train_error"] > 0.5
    # the learner's own refit (fresh reads each minibatch) after a completed run of 1 epoch
    labels = jnp.asarray(np.arange(60) % 3)
    xs = jax.random.uniform(jax.random.key(2), (60, 12)).at[jnp.arange(60), 3 + labels].add(2.0)
    cfg1 = dataclasses.replace(cfg, epochs=1)
    done = dataclasses.replace(ff.init_population(pop, cfg1, 6), step=jnp.full((2,), 6))
    f_done = readout_refit.features(done, xs, cfg1, seed=1)
    hist = readout_refit.learner_refit(
        done, xs, labels, cfg1, 0.3, 0.0, 2, 0,
        lambda i, w: {"train_error": float(np.mean(np.argmax(f_done[i] @ np.asarray(w), -1)
                                                   != np.asarray(labels)))})
    assert [len(h) for h in hist] == [2, 2]
    assert all(h[-1]["train_error"] < 0.2 for h in hist)
    with pytest.raises(SystemExit, match="done 0 epochs of 60 images, not its config's 1"):
        readout_refit.learner_refit(state, xs, labels, cfg1, 0.3, 0.0, 1, 0, None)


@pytest.mark.full_optimization
def test_a_student_slice_has_the_bits_of_the_whole_run() -> None:
    import dataclasses

    import jax
    import numpy as np

    import devices
    import distill

    from ..mortal.test_ff import CFG, W, _data, _tree_equal

    db = import_script("distill_benchmarks")
    x, y = _data()
    cfg = dataclasses.replace(CFG, epochs=2)
    dcfg = distill.DistillConfig()
    spec = devices.preset("ideal", W)  # an rram student compiles twice as long (78 s in all)
    teacher = db._train_ff(spec, 1, x, y, cfg, 3)
    watch = db.Watch(x[:20], np.asarray(y[:20]), np.asarray(y[:20]), 7)
    # the whole run's students learn in groups of one (lax.map); the slice's one is a vmap of
    # one: other programs, the same bits
    whole, whole_hist = db._distill(teacher, spec, 2, x, cfg, dcfg, 5, watch)
    part, hist = db._distill(teacher, spec, 2, x, cfg, dcfg, 5, watch, (1, 2))
    assert _tree_equal(part, jax.tree.map(lambda a: a[1:], whole))
    assert hist[-1]["val_error"] == whole_hist[-1]["val_error"][1:]
    # keys are drawn partitionably (jax_threefry_partitionable), so a --students 1 run is
    # student 0 of every N-student run
    alone, _ = db._distill(teacher, spec, 1, x, cfg, dcfg, 5, watch)
    assert _tree_equal(alone, jax.tree.map(lambda a: a[:1], whole))
    assert _tree_equal(db._train_ff(spec, 2, x, y, cfg, 5, (1, 2)),
                       jax.tree.map(lambda a: a[1:], db._train_ff(spec, 2, x, y, cfg, 5)))
    scores = db._scores(whole, x, cfg, 9)
    np.testing.assert_array_equal(db._scores(part, x, cfg, 9, 2, (1, 2)), scores[1:])
    # the slice is not the whole run's first student under another name
    assert not np.array_equal(scores[0], scores[1])
    assert not np.array_equal(np.asarray(whole.device.state.weights[0][0]),
                              np.asarray(whole.device.state.weights[0][1]))
    # the weight-copy arm on the runs' own kind of device (rram, several cells, read noise)
    rram = devices.preset("rram", W).replace_in_layers("synapse", cells=2)
    single = jax.tree.map(lambda a: a[0], teacher)
    copies = db._weight_copies(single, rram, 3, 11)
    part_copies = db._weight_copies(single, rram, 3, 11, (1, 3))
    assert _tree_equal(part_copies, jax.tree.map(lambda a: a[1:], copies))
    np.testing.assert_array_equal(db._scores(part_copies, x, cfg, 9, 3, (1, 3)),
                                  db._scores(copies, x, cfg, 9)[1:])


def test_the_label_arm_learns_with_the_students_negatives() -> None:
    import dataclasses

    import distill
    from mortal import ff

    db = import_script("distill_benchmarks")
    cfg = ff.FFConfig(epochs=2, momentum=0.98, lr_decay_start=0.9)
    # by default the students learn with the learner's negatives: the arm is the learner
    assert db._label_arm_config(cfg, distill.DistillConfig()) == cfg
    dcfg = distill.DistillConfig(negative_belief="goodness", negatives="excess",
                                 goodness_kl_weight=0.15, temperature=4.0)
    arm = db._label_arm_config(cfg, dcfg)
    student = distill.student_config(cfg, dcfg)
    assert (arm.negatives, arm.negative_belief) == (student.negatives, student.negative_belief)
    assert (arm.negatives, arm.negative_belief) == ("excess", "goodness")
    # nothing else of the students' rule: the arm learns from the labels with the learner's
    assert arm == dataclasses.replace(cfg, negatives="excess", negative_belief="goodness")
    arms = {"hard_label_error": [0.03], "mean_hard_label_error": 0.03,
            "weight_copy_error": [0.9], "mean_weight_copy_error": 0.9}
    learner = {"learner_config": {"negatives": "hard", "negative_belief": "readout"}}
    # a row written before the arm recorded its negatives learned with the learner's
    assert db._has_controls({**learner, **arms}, cfg)
    assert not db._has_controls({**learner, **arms}, arm)
    assert db._has_controls({**learner, **arms, "hard_label_negatives": "excess",
                             "hard_label_negative_belief": "goodness"}, arm)
    assert not db._has_controls({**learner, "hard_label_error": [0.03]}, cfg)
    # --controls-only adds arms only to a row of the same students; one from before the
    # students recorded their negatives learned with the learner's
    settings = {"epochs": 15, "student_cells": 1, "student_negative_belief": "readout"}
    assert db._same_settings({**learner, "epochs": 15}, settings)
    assert not db._same_settings({**learner, "epochs": 10}, settings)
    assert not db._same_settings({**learner, "epochs": 15, "student_cells": 8}, settings)
    assert not db._same_settings({**learner, "epochs": 15}, {
        **settings, "student_negative_belief": "goodness"})
    assert db._same_settings({**learner, "epochs": 15, "student_negative_belief": "goodness"},
                             {**settings, "student_negative_belief": "goodness"})


def _slice_row(first: int, last: int, **changes: object) -> dict:
    errs = [0.02 + 0.001 * i for i in range(first, last)]
    return {"students": 4, "epochs": 10, "seed": 0, "xla_flags": "", "teacher_error": 0.0224,
            "learner_config": {"lr": 0.1}, "student_slice": [first, last],
            "student_error": errs, "mean_student_error": sum(errs) / len(errs),
            "agreement": [0.99] * (last - first), "mean_agreement": 0.99,
            "kl": [0.1] * (last - first), "fitted_temperature": [3.0] * (last - first),
            "kl_at_fitted_temperature": [0.01] * (last - first),
            "agreement_with_consensus": [0.98] * (last - first),
            "mean_agreement_with_consensus": 0.98,
            "hard_label_error": [0.03] * (last - first), "hard_label_agreement": [0.97] *
            (last - first), "weight_copy_error": [0.9] * (last - first),
            "elapsed_s": 100.0 * (last - first), "git_revision": f"rev{first}",
            "command": f"slice {first}:{last}",
            "history": [{"epoch": e, "epoch_s": 2.0, "loss": float(first + e),
                         "val_error": [0.1 * i for i in range(first, last)]}
                        for e in (1, 2)], **changes}


def test_an_older_row_reads_with_the_settings_its_revision_used() -> None:
    rows = import_script("_rows")
    learner = {"learner_config": {"negatives": "hard", "negative_belief": "readout"}}
    old = {**learner, "students": 8}
    full = rows.spelled_out(old)
    assert full == {**old, "student_cells": 1, "student_input_bound": None,
                    "student_negatives": "hard", "student_negative_belief": "readout",
                    "hard_label_negatives": "hard", "hard_label_negative_belief": "readout"}
    assert old == {**learner, "students": 8}  # the row itself is left as it was
    recorded = {**learner, "student_cells": 8, "student_input_bound": 8.0,
                "student_negatives": "excess", "student_negative_belief": "goodness",
                "hard_label_negatives": "excess", "hard_label_negative_belief": "goodness"}
    assert rows.spelled_out(recorded) == recorded
    assert rows.spelled_out({})["student_negatives"] is None  # no learner: nothing to infer


def test_merged_slices_are_the_whole_row_and_refuse_what_is_not_one_run() -> None:
    m = import_script("merge_distill_slices")
    row = m.merge_rows([_slice_row(1, 4), _slice_row(0, 1)], ["b.json", "a.json"])
    assert row["student_error"] == [0.02, 0.021, 0.022, 0.023]
    assert row["mean_student_error"] == pytest.approx(0.0215)
    assert row["mean_weight_copy_error"] == pytest.approx(0.9)
    assert row["git_revision"] == ["rev0", "rev1"]
    assert [p["file"] for p in row["parts"]] == ["a.json", "b.json"]
    assert row["elapsed_s"] == 400.0 and row["student_slice"] is None
    h = row["history"]
    assert h[1]["val_error"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert h[0]["loss"] == pytest.approx((1 * 1 + 3 * 2) / 4)  # weighted by the slices' sizes
    assert h[0]["epoch_s"] == 4.0
    no_controls = _slice_row(1, 4)
    for k in m.CONTROLS:
        del no_controls[k]
    # how the label arm learned is a setting of the slices with arms only
    partial = m.merge_rows([_slice_row(0, 1, hard_label_negative_belief="goodness"),
                            no_controls])
    assert "hard_label_error" not in partial and "mean_weight_copy_error" not in partial
    assert "hard_label_negative_belief" not in partial
    # an arm that predates the record learned with the learner's negatives: the same as one
    # that records them
    learner = {"learner_config": {"negatives": "hard", "negative_belief": "readout"}}
    mixed = m.merge_rows([_slice_row(0, 2, **learner),
                          _slice_row(2, 4, **learner, hard_label_negatives="hard",
                                     hard_label_negative_belief="readout")])
    assert mixed["hard_label_negative_belief"] == "readout"
    with pytest.raises(m.SliceError, match="hard_label_negative_belief = 'goodness'"):
        m.merge_rows([_slice_row(0, 2, **learner),
                      _slice_row(2, 4, **learner, hard_label_negatives="hard",
                                 hard_label_negative_belief="goodness")])
    # the same for the students' negatives: a slice from before they were recorded joins one
    # that records the learner's, and not one whose students learned with others
    assert m.merge_rows([_slice_row(0, 2, **learner),
                         _slice_row(2, 4, **learner, student_negatives="hard",
                                    student_negative_belief="readout")]
                        )["student_negative_belief"] == "readout"
    with pytest.raises(m.SliceError, match="student_negative_belief = 'goodness'"):
        m.merge_rows([_slice_row(0, 2, **learner),
                      _slice_row(2, 4, **learner, student_negative_belief="goodness")])
    assert partial["controls"] == "not in every slice"
    for rows, says in (([_slice_row(0, 1), _slice_row(2, 4)], "students 1..1 of 4 are missing"),
                       ([_slice_row(0, 2), _slice_row(1, 4)], "students 1..1 are also in"),
                       ([_slice_row(0, 4), _slice_row(1, 3)], "students 1..2 are also in"),
                       ([_slice_row(0, 2), _slice_row(0, 2)], "students 0..1 are also in"),
                       ([_slice_row(0, 2), _slice_row(2, 4, students=8)], "students = 8"),
                       ([_slice_row(0, 2)], "students 2..3 of 4 are missing"),
                       ([_slice_row(0, 2), _slice_row(2, 4, seed=1)], "seed = 1"),
                       ([_slice_row(0, 2), _slice_row(2, 4, teacher_error=0.03)],
                        "teacher_error"),
                       ([_slice_row(0, 2), _slice_row(2, 4, xla_flags="--xla_foo")],
                        "xla_flags"),
                       ([_slice_row(0, 2), _slice_row(2, 4, cpu={"isa": ["avx2"]})], "cpu"),
                       ([_slice_row(0, 2, hard_label_negative_belief="readout"),
                         _slice_row(2, 4, hard_label_negative_belief="goodness")],
                        "hard_label_negative_belief = 'goodness'"),
                       ([_slice_row(0, 2), _slice_row(2, 4, controls="pending")],
                        "still training"),
                       ([_slice_row(0, 4, student_slice=None)], "not a --student-slice run")):
        with pytest.raises(m.SliceError, match=says):
            m.merge_rows(rows)


def test_saved_devices_read_back_as_they_were_evaluated(tmp_path: Path) -> None:
    """A population saved by ``ff_benchmarks.py --save-state`` and read by
    ``device_agreement.py`` errs on the same test images: noiseless ``ideal`` reads give every
    read, and the scores averaged over the reads, the error that training reported."""
    import json

    p = _script("ff_benchmarks.py", "digits-ideal", "--epochs", "2", "--devices", "2",
                "--save-state", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    trained = json.loads((tmp_path / "ff_digits-ideal.json").read_text())
    reported = trained["history"][-1]["test_goodness_error"]
    out = tmp_path / "agreement.json"
    p = _script("device_agreement.py", str(tmp_path / "ff_digits-ideal.npz"), "--reads", "2",
                "--out", str(out))
    assert p.returncode == 0, p.stderr
    got = json.loads(out.read_text())
    assert len(got["devices"]) == 2  # training reports errors to 5 decimals
    for i in range(2):
        assert got["test_error"][i] == pytest.approx([reported[i]] * 2, abs=1e-5)
        assert got["mean_of_reads_test_error"][i] == pytest.approx(reported[i], abs=1e-5)
        assert got["self_agreement"][i] == 1.0


def test_the_committed_run_configs_are_the_scripts_experiments() -> None:
    """``scripts/configs/mnist-rram-pop8-cells8-dac8.toml`` (a ``mortal train`` run, which can
    resume) trains the devices and learner that ``ff_benchmarks.py mnist-rram-pop8 --cells 8
    --input-bound 8`` with the issue-3 learner settings would."""
    fb = import_script("ff_benchmarks")
    from mortal import cli_jobs
    from mortal.config import load_config

    cfg = load_config(SCRIPTS / "configs" / "mnist-rram-pop8-cells8-dac8.toml")
    exp = fb.EXPERIMENTS["mnist-rram-pop8"]
    spec, learner = fb.build(exp, 10, {"label_strength": 2.0, "momentum": 0.98,
                                       "negative_belief": "goodness", "lr_decay_start": 0.9},
                             cells=8, input_bound=8.0)
    assert cli_jobs.device_spec(cfg, "train") == spec
    assert cfg.train == learner
    assert cfg.device.population == exp.n_devices and cfg.data.dataset == exp.dataset


def test_a_stopped_ff_benchmark_resumes_to_the_same_bits(tmp_path: Path) -> None:
    """``--checkpoint --stop-after 2`` then ``--resume``: the same history, test errors and
    final state as one uninterrupted run (multi-cell `rram` devices, so that the write
    offsets and the population's keys cross the checkpoint); the checkpoint is gone once the
    run completes, and a resume with other flags is one line naming what differs."""
    import json

    import numpy as np

    common = ["digits-rram", "--epochs", "3", "--devices", "2", "--cells", "2",
              "--overflow-cells", "1", "--save-state"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    p = _script("ff_benchmarks.py", *common, "--out", str(whole))
    assert p.returncode == 0, p.stderr
    p = _script("ff_benchmarks.py", *common, "--checkpoint", "--stop-after", "2",
                "--out", str(split))
    assert p.returncode == 0, p.stderr
    stopped = json.loads((split / "ff_digits-rram.json").read_text())
    assert not stopped["complete"] and len(stopped["history"]) == 2
    assert (split / "ff_digits-rram.ckpt.npz").exists()
    assert not (split / "ff_digits-rram.npz").exists()
    p = _script("ff_benchmarks.py", *common, "--set", "lr=0.02", "--resume",
                "--out", str(split))
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert "learner_config differ" in _last_line(p.stderr), p.stderr
    p = _script("ff_benchmarks.py", *common, "--resume", "--out", str(split))
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stdout and "after epoch 2/3" in p.stdout, p.stdout
    a = json.loads((whole / "ff_digits-rram.json").read_text())
    b = json.loads((split / "ff_digits-rram.json").read_text())
    assert b["complete"] and not (split / "ff_digits-rram.ckpt.npz").exists()
    assert len(b["resumed"]) == 1 and b["resumed"][0]["at_epoch"] == 2
    for ra, rb in zip(a["history"], b["history"], strict=True):
        ra.pop("epoch_s"), rb.pop("epoch_s")
        assert ra == rb
    with np.load(whole / "ff_digits-rram.npz") as za, np.load(split / "ff_digits-rram.npz") as zb:
        assert sorted(za.files) == sorted(zb.files)
        for k in za.files:
            if k != "__meta__":
                np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    p = _script("ff_benchmarks.py", *common, "--resume", "--out", str(split))
    assert p.returncode == 0 and "already complete" in p.stdout, p.stdout + p.stderr
