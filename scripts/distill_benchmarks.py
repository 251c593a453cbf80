"""Distillation benchmarks (issue: distillation between mortal devices). JSON + a table.

A teacher device is trained in place with Forward-Forward; fresh devices then learn, in place,
to reproduce its soft goodness probabilities (temperature T) on a transfer set. Reported apart:
student test error (goodness readout) and fidelity to the teacher (top-1 agreement, KL).

Experiments (all on ``--dataset``, default the embedded digits; ``mnist`` for the issue's figures):
  one-to-many   teacher → S fresh students on the unlabelled training images; alongside, the
                same students trained from hard labels with the same budget and negatives, and
                the weight-copy control arm (teacher's weights programmed into each student
                device)
  fraction      transfer set of ``--fraction`` (default 5 %) of the training images
  no-threes     every 3 left out of the transfer set; test-3 accuracy before / after a per-class
                bias fitted on the validation set (Hinton et al. 2015)
  chain         teacher → child → … for ``--generations`` generations, fresh device each time
  chain-pcm     the same chain from the rram teacher through fresh pcm devices
  cross-recipe  the rram teacher → pcm students
  copy-ideal    control: an ideal teacher's weights copied into another ideal device
  mutual        S devices, each with labels for only its 1/S of the training set, sharing
                beliefs on the unlabelled images (codistillation), vs one device on all labels

Reproduce: ``python scripts/distill_benchmarks.py --dataset digits`` (seeds: fab ``--seed``,
training ``--seed + 1``). Results: ``scripts/results/distill_<dataset>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import devices  # noqa: E402
import distill  # noqa: E402
from mortal import data, ff, parallel  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from _entry import run_script  # noqa: E402
from _overrides import parse_overrides  # noqa: E402
from _record import write_json  # noqa: E402
from _revision import git_revision  # noqa: E402
from _rows import spelled_out  # noqa: E402
from _state import load_state  # noqa: E402

from mortal.xla_cpu import cpu_signature, xla_flags  # noqa: E402

SETUPS = {  # dataset → (widths, learner config, read gain of the rram periphery)
    "digits": ((74, 200, 200, 200), {"batch_size": 20, "lr": 0.015, "accumulate": 8.0,
                                     "label_placement": "prepend"}, 0.5),
    # the rram periphery of scripts/ff_benchmarks.py mnist-rram (gain 0.12, no accumulation)
    "mnist": ((784, 1000, 1000, 1000), {}, 0.12),
}
# learner settings that differ for the pcm students of cross-recipe: on the digits, pcm devices
# learn without accumulation (4 devices, 40 epochs, validation goodness error 1.3-4.0 %) and
# stall with the rram devices' 8-pulse accumulation (30-89 %)
PCM_STUDENTS = {"digits": {"accumulate": 0.0}, "mnist": {}}
EXPERIMENTS = ("one-to-many", "fraction", "no-threes", "chain", "cross-recipe", "copy-ideal",
               "mutual", "chain-pcm")


def _spec(name: str, widths: tuple[int, ...], gain: float) -> devices.DeviceSpec:
    spec = devices.preset(name, widths)
    if name == "ideal":
        return spec
    return spec.replace_in_layers("read", gain=gain)


Members = tuple[int, int]  # students [first, last) of a run of n: a slice of the population


def _slice(tree: Any, members: Members | None) -> Any:
    return tree if members is None else jax.tree.map(lambda a: a[members[0]:members[1]], tree)


def _train_ff(spec: devices.DeviceSpec, n: int, x: jax.Array, y: jax.Array, cfg: ff.FFConfig,
              seed: int, members: Members | None = None) -> ff.FFState:
    """``n`` devices of ``spec`` trained on the labels; with ``members`` only devices
    ``[first, last)`` of them, with the same bits as in the whole run (one device at a time:
    ``parallel.population_epoch`` with ``chunk=1``; the keys are drawn for all ``n``)."""
    pop = _slice(devices.spawn(spec, n, jax.random.key(seed)), members)
    state = ff.init_population(pop, cfg, ff.steps_per_epoch(x.shape[0], cfg))
    size = jax.tree.leaves(pop)[0].shape[0]
    for e in tqdm(range(cfg.epochs), desc=f"FF {size}x{spec.name}", unit="epoch", leave=False):
        keys, order = _slice(ff.epoch_keys(jax.random.key(seed + 1), e, n, cfg), members)
        state, _ = parallel.population_epoch(state, x, y, keys, order, cfg=cfg, bench=ff.BENCH,
                                             mesh=None, chunk=1)
        jax.block_until_ready(state)  # so that the progress bar shows finished epochs
    return state


@dataclasses.dataclass(frozen=True)
class Watch:
    """What distillation epochs are checked on: the first validation images, their labels and
    the teacher's answers on them (one read). Each check costs one all-label read of those
    images per student; a run is checked after at most ``MAX_CHECKS`` evenly spaced epochs and
    after its last (a 5 % transfer set runs 20 short epochs per full-set epoch)."""

    x: jax.Array
    y: np.ndarray
    teacher_pred: np.ndarray
    seed: int


MAX_CHECKS = 30


def _distill(teacher: ff.FFState, spec: devices.DeviceSpec, n: int, x: jax.Array,
             cfg: ff.FFConfig, dcfg: distill.DistillConfig, seed: int,
             watch: Watch | None = None, members: Members | None = None
             ) -> tuple[ff.FFState, list[dict[str, Any]]]:
    """``n`` fresh students of ``spec`` distilled for ``cfg.epochs`` epochs, and their history:
    per epoch, the training metrics (means over students and steps) and, with ``watch``, each
    student's goodness error on the watched validation images and its agreement there with the
    teacher. With ``members``, only students ``[first, last)`` of the ``n``, with the same bits
    as in the whole run: students learn one at a time (``chunk=1``), every key is drawn for all
    ``n``, and the teacher's reads do not depend on the students."""
    scfg = distill.student_config(cfg, dcfg)
    pop = _slice(devices.spawn(spec, n, jax.random.key(seed)), members)
    students = ff.init_population(pop, scfg, ff.steps_per_epoch(x.shape[0], scfg))
    size = jax.tree.leaves(pop)[0].shape[0]
    history: list[dict[str, Any]] = []
    for e in tqdm(range(cfg.epochs), desc=f"distil -> {size}x{spec.name}", unit="epoch",
                  leave=False):
        started = time.perf_counter()
        k = jax.random.fold_in(jax.random.key(seed + 1), e)
        students, metrics = distill.distill_epoch(
            students, teacher, x, None, k,
            _slice(jax.random.split(jax.random.fold_in(k, 1), n), members), cfg=cfg, dcfg=dcfg,
            student_bench=ff.BENCH, teacher_bench=ff.BENCH, chunk=1)
        jax.block_until_ready(students)
        row: dict[str, Any] = {"epoch": e + 1, "epoch_s": round(time.perf_counter() - started, 2),
                               **{m: float(np.mean(v)) for m, v in metrics.items()}}
        every = -(-cfg.epochs // MAX_CHECKS)
        if watch is not None and ((e + 1) % every == 0 or e + 1 == cfg.epochs):
            pred = _scores(students, watch.x, cfg, watch.seed + e, n, members).argmax(-1)
            row["val_error"] = [float(np.mean(p != watch.y)) for p in pred]
            row["val_agreement"] = [float(np.mean(p == watch.teacher_pred)) for p in pred]
        history.append(row)
    return students, history


def _per_member(fn: Any, state: ff.FFState, x: jax.Array, seed: int, n: int | None = None,
                members: Members | None = None) -> np.ndarray:
    """``fn(member, key, x_chunk)`` for every member, one member at a time (``lax.map``) and
    1,000 images at a time: ``(P, N, C)``. ``state`` holds members ``[first, last)`` of a
    population of ``n`` (default: all P of P); their keys are those of the whole population.
    (A ``vmap`` over 8 MNIST students took about 13 minutes on this VM, against about 5 s for
    one read of one device; the ``lax.map`` version gives the same digits figures but was not
    timed on MNIST.)"""
    if members is not None and n is None:
        raise ValueError("_per_member: members need n, the size of the whole population")
    keys = _slice(jax.random.split(jax.random.key(seed), n or state.step.shape[0]), members)
    run = jax.jit(lambda st, ks, xc: jax.lax.map(lambda a: fn(a[0], a[1], xc), (st, ks)))
    return np.concatenate([np.asarray(run(state, keys, x[i:i + 1000]))
                           for i in range(0, x.shape[0], 1000)], axis=1)


def _scores(state: ff.FFState, x: jax.Array, cfg: ff.FFConfig, seed: int, n: int | None = None,
            members: Members | None = None) -> np.ndarray:
    """Goodness scores ``(P, N, C)`` of every member (measure only; ``n``, ``members``: as for
    ``_per_member``)."""
    return _per_member(lambda st, k, xc: ff.goodness_scores(st.device, xc, cfg, k), state, x,
                       seed, n, members)


def _readouts(state: ff.FFState, x: jax.Array, cfg: ff.FFConfig, seed: int) -> np.ndarray:
    """One-pass neutral-label readout logits ``(P, N, C)`` of every member (measure only)."""
    return _per_member(lambda st, k, xc: ff.readout_logits(st, xc, cfg, k), state, x, seed)


def _bias_corrected_threes(test: np.ndarray, val: np.ndarray, y_val: np.ndarray,
                           y_test: np.ndarray, t: float) -> dict[str, list[float]]:
    """Accuracy on the test 3s and test error of every member: before any correction, after
    per-class offsets fitted by cross-entropy on the labelled validation set (scores divided by
    T; ``after``), and after the 3's offset alone tuned for validation accuracy (Hinton et al.'s
    one raised bias; ``tuned``)."""
    threes = y_test == 3
    out: dict[str, list[float]] = {k: [] for k in ("before", "after", "tuned", "error_before",
                                                    "error_after", "error_tuned", "offset_3")}
    for sc_t, sc_v in zip(test, val, strict=True):
        offset = distill.tune_class_offset(sc_v / t, y_val, 3)
        tuned = sc_t / t
        tuned[:, 3] += offset
        fitted = distill.corrected_predictions(sc_t, sc_v, y_val, temperature=t)
        for name, pred in (("before", sc_t.argmax(-1)), ("after", fitted),
                           ("tuned", tuned.argmax(-1))):
            out[name].append(float(np.mean(pred[threes] == 3)))
            out[f"error_{name}"].append(float(np.mean(pred != y_test)))
        out["offset_3"].append(offset)
    return out


def _report(teacher_reads: np.ndarray, student_scores: np.ndarray, y: np.ndarray, t: float,
            n_classes: int) -> dict[str, Any]:
    """Fidelity of every student to the teacher, read ``R`` times ``(R, N, C)`` (read noise):
    metrics against the first read, the teacher's agreement with itself between reads (the
    ceiling of any top-1 agreement with one read), and agreement with the teacher's consensus
    (the argmax of its scores summed over the R reads)."""
    teacher_scores = teacher_reads[0]
    tp = jax.nn.softmax(teacher_scores / t, -1)
    rows = [distill.fidelity(np.asarray(tp), np.asarray(jax.nn.softmax(s / t, -1)), y,
                             n_classes) for s in student_scores]
    err = [1 - r["student_accuracy"] for r in rows]
    # the temperature at which each student's goodness softmax is closest to the teacher's
    # (ff.fit_temperature) and the KL there: how well the shape matches, whatever the scale
    fitted = [float(ff.fit_temperature(jnp.asarray(s), tp, t)) for s in student_scores]
    kl_fitted = [distill.fidelity(np.asarray(tp), np.asarray(jax.nn.softmax(s / f, -1)), y,
                                  n_classes)["kl"] for s, f in zip(student_scores, fitted,
                                                                   strict=True)]
    first, consensus = teacher_reads[0].argmax(-1), teacher_reads.sum(0).argmax(-1)
    with_consensus = [float(np.mean(s.argmax(-1) == consensus)) for s in student_scores]
    return {"student_error": err, "mean_student_error": float(np.mean(err)),
            "teacher_error": 1 - rows[0]["teacher_accuracy"],
            "agreement": [r["agreement"] for r in rows],
            "mean_agreement": float(np.mean([r["agreement"] for r in rows])),
            "kl": [r["kl"] for r in rows],
            "fitted_temperature": fitted, "kl_at_fitted_temperature": kl_fitted,
            "teacher_reads": int(teacher_reads.shape[0]),
            "teacher_self_agreement": float(np.mean([np.mean(first == r.argmax(-1))
                                                     for r in teacher_reads[1:]])),
            "teacher_consensus_error": float(np.mean(consensus != y)),
            "agreement_with_consensus": with_consensus,
            "mean_agreement_with_consensus": float(np.mean(with_consensus))}


def _weight_copies(teacher: ff.FFState, spec: devices.DeviceSpec, n: int, seed: int,
                   members: Members | None = None) -> ff.FFState:
    """The immortal control arm: the teacher's weights programmed into the ``n`` devices of
    ``spec`` that ``_train_ff(spec, n, ..., seed + 100)`` starts from, one device at a time
    (``lax.map``; with ``members``, only those of them, with the same bits)."""
    fresh = _slice(devices.spawn(spec, n, jax.random.key(seed + 100)), members)
    keys = _slice(jax.random.split(jax.random.key(seed + 5), n), members)
    return jax.lax.map(lambda a: distill.copy_weights(teacher, a[0], key=a[1]), (fresh, keys))


CONTROL_ARMS = ("hard_label_error", "mean_hard_label_error", "weight_copy_error",
                "mean_weight_copy_error")
CONTROL_DETAILS = ("hard_label_agreement", "mean_hard_label_agreement", "hard_label_negatives",
                   "hard_label_negative_belief")


def _label_arm_config(cfg: ff.FFConfig, dcfg: distill.DistillConfig) -> ff.FFConfig:
    """The hard-label arm's learner: ``cfg`` with the students' negatives and negative belief
    (``distill.student_config``), so that it differs from the students only in learning from
    the labels instead of the teacher."""
    student = distill.student_config(cfg, dcfg)
    return dataclasses.replace(cfg, negatives=student.negatives,
                               negative_belief=student.negative_belief)


def _has_controls(row: dict[str, Any], label_cfg: ff.FFConfig) -> bool:
    """Whether ``row`` (a one-to-many row) has control arms whose label arm learned with
    ``label_cfg``'s negatives (``_same_settings``: an arm that predates the record used the
    learner's)."""
    return all(k in row for k in CONTROL_ARMS) and _same_settings(row, {
        "hard_label_negatives": label_cfg.negatives,
        "hard_label_negative_belief": label_cfg.negative_belief})


def _same_settings(row: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether ``row`` (an earlier one-to-many row) has every one of ``settings`` (name: value as
    JSON reads it back), settings it did not record read as the revision that wrote it used
    them (``_rows.spelled_out``)."""
    full = spelled_out(row)
    return all(full.get(k) == v for k, v in settings.items())


def _controls(spec: devices.DeviceSpec, n: int, x: jax.Array, y: jax.Array, xt: jax.Array,
              yt: np.ndarray, cfg: ff.FFConfig, seed: int, members: Members | None,
              teacher: ff.FFState, t_scores: np.ndarray) -> dict[str, Any]:
    """The one-to-many row's control arms, per student: the students' devices trained on the
    labels with their budget and learning rule (``cfg``: the learner's, with the students'
    negatives and negative belief; error, and top-1 agreement with the teacher's first read
    ``t_scores[0]``: what agreement owes to the labels alone), and the teacher's weights
    copied into them (the immortal arm). Independent of the teacher's targets."""
    hard = _train_ff(spec, n, x, y, cfg, seed + 100, members)
    h_scores = _scores(hard, xt, cfg, seed + 4, n, members)
    row: dict[str, Any] = {
        "hard_label_error": [float(np.mean(a.argmax(-1) != yt)) for a in h_scores],
        "hard_label_agreement": [float(np.mean(a.argmax(-1) == t_scores[0].argmax(-1)))
                                 for a in h_scores],
        "hard_label_negatives": cfg.negatives, "hard_label_negative_belief": cfg.negative_belief}
    copies = _weight_copies(teacher, spec, n, seed, members)
    row["weight_copy_error"] = _errors(copies, xt, yt, cfg, seed + 6, n, members)
    for k in ("hard_label_error", "hard_label_agreement", "weight_copy_error"):
        row[f"mean_{k}"] = float(np.mean(row[k]))
    return row


def _errors(state: ff.FFState, x: jax.Array, y: np.ndarray, cfg: ff.FFConfig, seed: int,
            n: int | None = None, members: Members | None = None) -> list[float]:
    return [float(np.mean(a.argmax(-1) != y)) for a in _scores(state, x, cfg, seed, n, members)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", choices=sorted(SETUPS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--epochs", type=int, default=60,
                        help="FF epochs of every trained or distilled population")
    parser.add_argument("--students", type=int, default=8)
    parser.add_argument("--student-slice", default=None, metavar="FIRST:LAST",
                        help="one-to-many only: train students FIRST..LAST-1 of the --students "
                        "of the run, each with the same bits as in the whole run (students "
                        "learn one at a time; every key is drawn for all of them) on the same "
                        "kind of CPU and XLA flags, so that slices run on other days add up, with "
                        "scripts/merge_distill_slices.py, to the whole run's row")
    parser.add_argument("--student-cells", type=int, default=1, metavar="N",
                        help="conductance cells per synapse of every rram student and control "
                        "device (SynapseSpec.cells, Boybat et al. 2018); the teacher keeps its "
                        "own recipe (default 1)")
    parser.add_argument("--student-input-bound", type=float, default=None, metavar="X",
                        help="the DAC's full scale of every rram student and control device "
                        "(ReadSpec.input_bound, every layer; rram: 4), e.g. 8 for students of "
                        "a teacher trained with ff_benchmarks.py --input-bound 8")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--fraction-epochs", type=int, default=None,
                        help="epochs over the small transfer set (default: as many steps as "
                        "--epochs over the whole set)")
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=20.0,
                        help="T of the soft targets the students' readouts match")
    parser.add_argument("--positive-temperature", type=float, default=1.0,
                        help="τ at which the students' positive classes are drawn from the "
                        "teacher's goodness scores (DistillConfig.positive_temperature)")
    parser.add_argument("--teacher-reads", type=int, default=1,
                        help="reads of the teacher averaged per step "
                        "(DistillConfig.teacher_reads)")
    parser.add_argument("--goodness-kl", type=float, default=0.0, metavar="KAPPA",
                        help="students also descend KAPPA T^2 KL(teacher || softmax(goodness/T)) "
                        "over every label (DistillConfig.goodness_kl_weight; C passes per "
                        "example instead of 2)")
    parser.add_argument("--goodness-kl-temperature", choices=["targets", "fit", "fit_exact"],
                        default="targets", help="the goodness term's temperature: the targets' "
                        "T, or fitted to each student's scores on every minibatch (fit: with "
                        "the pull at T; fit_exact: the gradient of KAPPA T^2 KL at the fitted "
                        "temperature; DistillConfig.goodness_kl_temperature)")
    parser.add_argument("--goodness-kl-start", type=float, default=0.0, metavar="FRACTION",
                        help="the goodness term is off for the first FRACTION of the students' "
                        "schedule (DistillConfig.goodness_kl_start; 0.5: only while the "
                        "learning rate decays; default 0: from the start)")
    parser.add_argument("--student-negatives", choices=["hard", "random", "excess"],
                        default=None, help="the students' negative classes (default: the "
                        "learner's, hard; DistillConfig.negatives)")
    parser.add_argument("--student-negative-belief", choices=["readout", "goodness"],
                        default=None, help="what the students' hard or excess negatives are "
                        "drawn from (default: the learner's, readout; goodness: each student's "
                        "goodness over every label, C passes per example; "
                        "DistillConfig.negative_belief)")
    parser.add_argument("--jitter", type=int, default=0, metavar="PIXELS",
                        help="show every minibatch to teacher and students as one fresh view, "
                        "each image shifted by up to PIXELS in each direction "
                        "(DistillConfig.jitter; default 0: the images as they are)")
    parser.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                        help="show every minibatch to teacher and students blended: each image "
                        "mixed with another of the minibatch at a weight drawn from "
                        "Beta(ALPHA, ALPHA) (DistillConfig.mixup; default 0: no blending)")
    parser.add_argument("--watch", type=int, default=1000, metavar="N",
                        help="after every distillation epoch, read each student on the first N "
                        "validation images (at most 30 evenly spaced epochs, and the last): "
                        "its error and agreement with the teacher go into the row's history "
                        "(0: training metrics only)")
    parser.add_argument("--source", choices=["goodness", "readout"], default="goodness",
                        help="where soft targets and shared beliefs come from: the goodness "
                        "scores over every label (10 passes per image) or the one-pass "
                        "readout (DistillConfig.source)")
    parser.add_argument("--no-controls", action="store_true",
                        help="one-to-many: do not re-train the hard-label and weight-copy "
                        "arms; they are carried over from the previous row if it used the same "
                        "students, epochs, seed and learner (they do not depend on T, τ or R)")
    parser.add_argument("--controls-only", action="store_true",
                        help="one-to-many: train only the hard-label and weight-copy arms and "
                        "add them to the row of the same students (students, epochs, seed, "
                        "slice, cells, DAC, learner, teacher) already in --out, e.g. one "
                        "written with --no-controls or stopped while its controls trained; "
                        "the arms do not depend on the students")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a learner-config field of teacher and students from the "
                        "dataset's setup, e.g. --set label_strength=2.0 (a --teacher-state must "
                        "have been trained with the same label embedding; the pcm students' "
                        "PCM_STUDENTS settings win over it); repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-state", default=None,
                        help="a trained rram teacher saved by scripts/ff_benchmarks.py "
                        "--save-state (device 0 is the teacher); default: train one here")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results"),
                        help="a directory (results go to distill_<dataset>.json in it, merged "
                        "with what is there) or a .json file")
    parser.add_argument("--experiments", nargs="+", default=["all"],
                        choices=["all", *EXPERIMENTS],
                        help="which experiments to run; results are merged into the JSON file")
    args = parser.parse_args()
    overrides = parse_overrides(args.set, parser, reserved={
        "epochs": "--epochs", "n_classes": "--dataset"})
    selected = list(EXPERIMENTS) if "all" in args.experiments else args.experiments
    members = None
    if args.student_slice is not None:
        if selected != ["one-to-many"]:
            parser.error("--student-slice needs --experiments one-to-many (only that row is "
                         "made of independent students)")
        try:
            first, last = (int(v) for v in args.student_slice.split(":"))
        except ValueError:
            parser.error(f"--student-slice: write FIRST:LAST (two integers), got "
                         f"{args.student_slice!r}")
        if not 0 <= first < last <= args.students:
            parser.error(f"--student-slice {args.student_slice}: needs 0 <= FIRST < LAST <= "
                         f"--students ({args.students})")
        members = (first, last)

    if args.controls_only and (selected != ["one-to-many"] or args.no_controls):
        parser.error("--controls-only needs --experiments one-to-many and no --no-controls")

    widths, cfg_kw, gain = SETUPS[args.dataset]
    rram, pcm = _spec("rram", widths, gain), _spec("pcm", widths, gain)
    teacher_rram = rram  # a teacher trained here: one cell per synapse, whatever the students
    if args.student_cells != 1:
        try:
            rram = rram.replace_in_layers("synapse", cells=args.student_cells)
        except devices.SpecError as exc:
            parser.error(f"--student-cells: {exc}")
    if args.student_input_bound is not None:
        try:
            rram = rram.replace_in_layers("read", input_bound=args.student_input_bound)
        except devices.SpecError as exc:
            parser.error(f"--student-input-bound: {exc}")
    ds = data.load(args.dataset, args.data_dir)
    try:
        cfg = ff.FFConfig(epochs=args.epochs, n_classes=ds.n_classes, **{**cfg_kw, **overrides})
        ff.check_fits(rram, cfg)  # every device of the script has these widths
    except (TypeError, ValueError) as exc:
        parser.error(f"--set with --dataset {args.dataset}: {exc}")
    try:
        dcfg = distill.DistillConfig(temperature=args.temperature, source=args.source,
                                     positive_temperature=args.positive_temperature,
                                     teacher_reads=args.teacher_reads,
                                     goodness_kl_weight=args.goodness_kl,
                                     goodness_kl_temperature=args.goodness_kl_temperature,
                                     goodness_kl_start=args.goodness_kl_start,
                                     negatives=args.student_negatives,
                                     negative_belief=args.student_negative_belief,
                                     jitter=args.jitter, mixup=args.mixup,
                                     image_shape=ds.image_shape if args.jitter else None)
    except ValueError as exc:
        parser.error(str(exc))
    label_cfg = _label_arm_config(cfg, dcfg)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    xt, yt = jnp.asarray(ds.x_test), np.asarray(ds.y_test)
    s, t, n = args.seed, args.temperature, args.students
    # a directory (the file is distill_<dataset>.json in it), or the JSON file itself
    out = Path(args.out)
    if out.suffix != ".json":
        out = out / f"distill_{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    results["dataset"] = args.dataset

    def save() -> None:
        write_json(out, results, default=str)

    # what an earlier one-to-many row must share with this run to be these students
    these_students = {
        "students": n, "epochs": args.epochs, "seed": s,
        "student_slice": None if members is None else list(members),
        "student_cells": args.student_cells, "student_input_bound": args.student_input_bound,
        "learner_config": json.loads(json.dumps(dataclasses.asdict(cfg))),
        "student_negatives": label_cfg.negatives,
        "student_negative_belief": label_cfg.negative_belief,
        "teacher_state": args.teacher_state}

    if args.controls_only:
        earlier = results.get("one-to-many")
        if not isinstance(earlier, dict) or "student_error" not in earlier \
                or not _same_settings(earlier, these_students):
            parser.error(f"--controls-only: {out} has no one-to-many row of these students "
                         f"(students, epochs, seed, slice, cells, DAC, learner, negatives, "
                         f"teacher); run without --controls-only first")
        if _has_controls(earlier, label_cfg):
            print(f"--controls-only: the row in {out} has its control arms already "
                  f"(revision {earlier.get('controls_revision')}); nothing to do")
            return

    rev = git_revision(ROOT)

    def log(name: str, row: dict[str, Any], started: float,
            history: list[dict[str, Any]] | None = None) -> None:
        if history is not None:
            row["history"] = history
        row.update(elapsed_s=round(time.perf_counter() - started, 1), epochs=args.epochs,
                   students=n, temperature=t, positive_temperature=args.positive_temperature,
                   teacher_reads=args.teacher_reads, source=args.source,
                   goodness_kl_weight=args.goodness_kl,
                   goodness_kl_temperature=args.goodness_kl_temperature,
                   goodness_kl_start=args.goodness_kl_start,
                   # what the students used: the flag, else the learner config's (--set)
                   student_negatives=args.student_negatives or cfg.negatives,
                   student_negative_belief=args.student_negative_belief or cfg.negative_belief,
                   jitter=args.jitter, student_cells=args.student_cells,
                   student_input_bound=args.student_input_bound,
                   mixup=args.mixup, seed=s, git_revision=rev, xla_flags=xla_flags(),
                   cpu=cpu_signature(), jax=jax.__version__, jaxlib=jaxlib.__version__,
                   watch=args.watch,
                   student_slice=None if members is None else list(members),
                   widths=list(widths),
                   teacher_state=args.teacher_state, learner_config=dataclasses.asdict(cfg),
                   command=" ".join([sys.executable, *sys.argv]))
        results[name] = row
        save()
        print(f"[{name}] " + ", ".join(f"{k}={v}" for k, v in row.items()
                                      if not isinstance(v, (list, dict))), flush=True)

    teacher = t_scores = None
    if set(selected) - {"mutual", "copy-ideal"}:
        started = time.perf_counter()
        if args.teacher_state:
            teacher, tspec, tcfg = load_state(args.teacher_state)
            if tspec.widths != widths:
                raise SystemExit(f"--teacher-state: widths {tspec.widths} differ from the "
                                 f"{args.dataset} setup's {widths}")
            # the teacher is measured with this run's label embedding: it must be its own
            embed = ("n_classes", "label_strength", "label_placement", "mode")
            if any(getattr(tcfg, f) != getattr(cfg, f) for f in embed):
                raise SystemExit(f"--teacher-state: the teacher was trained with another label "
                                 f"embedding ({', '.join(embed)}) than the {args.dataset} setup")
            teacher = jax.tree.map(lambda a: a[:1], teacher)
        else:
            teacher = _train_ff(teacher_rram, 1, x, y, cfg, s)
        # the teacher read 5 times (independent read noise); the first read is the reference
        t_scores = np.stack([_scores(teacher, xt, cfg, s + 2 + 1000 * r)[0] for r in range(5)])
        print(f"teacher: test error {100 * np.mean(t_scores[0].argmax(-1) != yt):.2f}% "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    single = None if teacher is None else jax.tree.map(lambda a: a[0], teacher)
    watch = None
    if teacher is not None and args.watch > 0:
        xw, yw = jnp.asarray(ds.x_val[:args.watch]), np.asarray(ds.y_val[:args.watch])
        watch = Watch(xw, yw, _scores(teacher, xw, cfg, s + 19)[0].argmax(-1), s + 20)

    for name in selected:
        started = time.perf_counter()
        if name == "one-to-many" and args.controls_only:
            row = {k: v for k, v in results[name].items() if k != "controls"}
            row.update(_controls(rram, n, x, y, xt, yt, label_cfg, s, members, single, t_scores),
                       controls_revision=rev, controls_elapsed_s=round(
                           time.perf_counter() - started, 1),
                       controls_command=" ".join([sys.executable, *sys.argv]))
            results[name] = row
            save()
            print(f"[{name}] control arms added: hard labels "
                  f"{100 * row['mean_hard_label_error']:.2f}%, weight copy "
                  f"{100 * row['mean_weight_copy_error']:.2f}%", flush=True)
        elif name == "one-to-many":
            students, history = _distill(teacher, rram, n, x, cfg, dcfg, s + 100, watch,
                                         members)
            row = _report(t_scores, _scores(students, xt, cfg, s + 3, n, members), yt, t,
                          ds.n_classes)
            old = results.get(name, {})
            if args.no_controls:
                if _same_settings(old, these_students) and _has_controls(old, label_cfg):
                    row.update({k: old[k] for k in (*CONTROL_ARMS, *CONTROL_DETAILS) if k in old},
                               controls_revision=old.get("controls_revision",
                                                         old.get("git_revision")))
                else:
                    print("--no-controls: no earlier row with these students, epochs, seed and "
                          "learner; the row has no control arms", flush=True)
            else:
                # the students' row is kept while the control arms train: a run stopped
                # there loses only the controls, and says so (--controls-only adds them)
                log(name, {**row, "controls": "pending"}, started, history)
                row.update(_controls(rram, n, x, y, xt, yt, label_cfg, s, members, single,
                                     t_scores), controls_revision=rev)
            log(name, row, started, history)
        elif name == "fraction":
            part = jnp.asarray(distill.random_fraction(np.asarray(x), args.fraction, seed=s))
            # default: the same number of learning steps as on the whole set
            epochs = args.fraction_epochs or round(cfg.epochs * x.shape[0] / part.shape[0])
            small, history = _distill(teacher, rram, n, part, dataclasses.replace(
                cfg, batch_size=min(cfg.batch_size, part.shape[0]), epochs=epochs), dcfg,
                s + 200, watch)
            log(name, {"fraction": args.fraction, "transfer_images": int(part.shape[0]),
                       "fraction_epochs": epochs,
                       **_report(t_scores, _scores(small, xt, cfg, s + 7), yt, t,
                                 ds.n_classes)}, started, history)
        elif name == "no-threes":
            no3 = jnp.asarray(distill.without_classes(np.asarray(x), np.asarray(y), (3,)))
            blind, history = _distill(teacher, rram, n, no3, cfg, dcfg, s + 300, watch)
            xv, yv = jnp.asarray(ds.x_val), np.asarray(ds.y_val)
            b_test = _scores(blind, xt, cfg, s + 8)
            g = _bias_corrected_threes(b_test, _scores(blind, xv, cfg, s + 9), yv, yt, t)
            # the readout learned the teacher's probabilities at T, class 3's included
            r_test = _readouts(blind, xt, cfg, s + 17)
            r = _bias_corrected_threes(r_test, _readouts(blind, xv, cfg, s + 18), yv, yt, t)
            log(name, {"test3_accuracy_before": g["before"], "test3_accuracy_after": g["after"],
                       "mean_before": float(np.mean(g["before"])),
                       "mean_after": float(np.mean(g["after"])),
                       "readout_test3_accuracy_before": r["before"],
                       "readout_test3_accuracy_after": r["after"],
                       "readout_mean_before": float(np.mean(r["before"])),
                       "readout_mean_after": float(np.mean(r["after"])),
                       "readout_error": [float(np.mean(x.argmax(-1) != yt)) for x in r_test],
                       "goodness_correction": g, "readout_correction": r,
                       "mean_tuned": float(np.mean(g["tuned"])),
                       "readout_mean_tuned": float(np.mean(r["tuned"])),
                       **_report(t_scores, b_test, yt, t, ds.n_classes)}, started, history)
        elif name in ("chain", "chain-pcm"):
            spec, ccfg = ((rram, cfg) if name == "chain" else
                          (pcm, dataclasses.replace(cfg, **PCM_STUDENTS[args.dataset])))
            states, lineage = distill.chain(single, spec, args.generations, x, None, ccfg, dcfg,
                                            epochs=args.epochs, seed=s + 400, progress=True)
            errors = [_errors(jax.tree.map(lambda a: a[None], st), xt, yt, cfg, s + 10)[0]
                      for st in states]
            log(name, {"generation_error": errors, "lost_over_chain": errors[-1] - errors[0],
                       "lineage": lineage,
                       "student_learner_config": dataclasses.asdict(
                           distill.student_config(ccfg, dcfg))}, started)
        elif name == "cross-recipe":
            pcm_cfg = dataclasses.replace(cfg, **PCM_STUDENTS[args.dataset])
            cross, history = _distill(teacher, pcm, n, x, pcm_cfg, dcfg, s + 500, watch)
            log(name, {"teacher_recipe": "rram", "student_recipe": "pcm",
                       "student_learner_config": dataclasses.asdict(
                           distill.student_config(pcm_cfg, dcfg)),
                       **_report(t_scores, _scores(cross, xt, cfg, s + 11), yt, t,
                                 ds.n_classes)}, started, history)
        elif name == "copy-ideal":
            ideal = devices.preset("ideal", widths)
            it = _train_ff(ideal, 1, x, y, cfg, s + 600)
            other = devices.fabricate(ideal, jax.random.key(s + 601))
            copied = distill.copy_weights(jax.tree.map(lambda a: a[0], it), other,
                                          key=jax.random.key(1))
            log(name, {"teacher_error": _errors(it, xt, yt, cfg, s + 12)[0],
                       "copy_error": _errors(jax.tree.map(lambda a: a[None], copied), xt, yt,
                                             cfg, s + 13)[0]}, started)
        elif name == "mutual":
            shard = x.shape[0] // n
            xs = x[: n * shard].reshape(n, shard, -1)
            ys = y[: n * shard].reshape(n, shard)
            scfg = distill.student_config(cfg, dcfg)
            pop = devices.spawn(rram, n, jax.random.key(s + 700))
            st = ff.init_population(pop, scfg, ff.steps_per_epoch(x.shape[0], scfg))
            burn_in = cfg.epochs // 4  # shards alone first, then codistillation (Anil et al.)
            for e in tqdm(range(cfg.epochs), desc=f"mutual {n}x{rram.name}", unit="epoch",
                          leave=False):
                # an epoch's first step refreshes the shared beliefs from the states, so the
                # returned stale copy is not needed: keeping it alive next to the states and
                # the new outputs was 4 copies of the population (8 8-cell devices: killed
                # for memory on a 24 GiB machine in session 34)
                st, _, _ = distill.mutual_epoch(
                    st, st, x, xs, ys, jax.random.fold_in(jax.random.key(s + 701), e),
                    cfg=cfg, dcfg=dcfg, exchange_every=10, bench=ff.BENCH, distil=e >= burn_in)
                jax.block_until_ready(st)  # so that the progress bar shows finished epochs
            mutual_err = _errors(st, xt, yt, cfg, s + 14)
            alone = _train_ff(rram, 1, x[:shard], y[:shard], cfg, s + 702)  # one shard alone
            alone_err = _errors(alone, xt, yt, cfg, s + 15)
            full = _train_ff(rram, 1, x, y, cfg, s + 703)
            full_err = _errors(full, xt, yt, cfg, s + 16)[0]
            log(name, {"device_error": mutual_err,
                       "mean_device_error": float(np.mean(mutual_err)),
                       "shard_only_error": alone_err,
                       "mean_shard_only_error": float(np.mean(alone_err)),
                       "all_labels_error": full_err, "exchange_every": 10,
                       "burn_in_epochs": burn_in, "shard_size": int(shard)}, started)
    print_table(results)


def _ceiling(row: dict[str, Any]) -> str:
    if "teacher_self_agreement" not in row:  # rows written before the teacher was read 5 times
        return ""
    return (f" (teacher vs itself {100 * row['teacher_self_agreement']:.1f}%; vs its consensus "
            f"{100 * row['mean_agreement_with_consensus']:.1f}%)")


def print_table(r: dict[str, Any]) -> None:
    """One line per experiment found in the results (from this run or earlier ones)."""
    table = []
    if "one-to-many" in r:
        o = r["one-to-many"]
        table += [
            ("one teacher -> students (mean err %)", 100 * o["mean_student_error"],
             f"teacher {100 * o['teacher_error']:.2f}%, agreement "
             f"{100 * o['mean_agreement']:.1f}%{_ceiling(o)}"),
        ]
        if "mean_hard_label_error" in o:
            agree = (f"agreement {100 * o['mean_hard_label_agreement']:.1f}%"
                     if "mean_hard_label_agreement" in o else "")
            table += [("same students, hard labels", 100 * o["mean_hard_label_error"], agree),
                      ("weight copy into the students", 100 * o["mean_weight_copy_error"],
                       "immortal control arm")]
    if "fraction" in r:
        f = r["fraction"]
        table.append((f"transfer set {100 * f['fraction']:g}%", 100 * f["mean_student_error"],
                      f"teacher {100 * f['teacher_error']:.2f}%, agreement "
                      f"{100 * f['mean_agreement']:.1f}%"))
    if "no-threes" in r:
        b = r["no-threes"]
        table.append(("no 3s: test-3 accuracy before -> after bias", 100 * b["mean_before"],
                      f"-> {100 * b['mean_after']:.1f}% (goodness)"))
        if "readout_mean_before" in b:
            table.append(("no 3s, readout: before -> after bias", 100 * b["readout_mean_before"],
                          f"-> {100 * b['readout_mean_after']:.1f}%"))
        for which, label in (("goodness_correction", "goodness"),
                             ("readout_correction", "readout")):
            if which in b:  # errors over all test images, and the tuned 3-offset
                c = b[which]
                table.append((f"no 3s, {label}: test error before",
                              100 * np.mean(c["error_before"]),
                              f"-> {100 * np.mean(c['error_after']):.2f}% (all offsets, "
                              f"cross-entropy); 3's offset tuned: 3s "
                              f"{100 * np.mean(c['tuned']):.1f}%, error "
                              f"{100 * np.mean(c['error_tuned']):.2f}%"))
    for name, what in (("chain", "chain"), ("chain-pcm", "chain of pcm devices")):
        if name in r:
            c = r[name]["generation_error"]
            table.append((f"{what} of {len(c) - 1}: last generation err", 100 * c[-1],
                          "teacher first: " + " ".join(f"{100 * e:.1f}" for e in c)))
    if "cross-recipe" in r:
        x = r["cross-recipe"]
        table.append(("rram teacher -> pcm students", 100 * x["mean_student_error"],
                      f"agreement {100 * x['mean_agreement']:.1f}%"))
    if "copy-ideal" in r:
        table.append(("ideal -> ideal weight copy", 100 * r["copy-ideal"]["copy_error"],
                      f"teacher {100 * r['copy-ideal']['teacher_error']:.2f}%"))
    if "mutual" in r:
        m = r["mutual"]
        table.append(("mutual: device error (mean)", 100 * m["mean_device_error"],
                      f"shard alone {100 * m['mean_shard_only_error']:.2f}%, all labels "
                      f"{100 * m['all_labels_error']:.2f}%"))
    w = max([len(a) for a, _, _ in table] + [10])
    print(f"{'experiment':<{w}}  {'value %':>8}  notes")
    for a, v, note in table:
        print(f"{a:<{w}}  {v:8.2f}  {note}")


if __name__ == "__main__":
    run_script(main)
