"""The command line's jobs: a run is a plan of phases (train, distill) executed epoch by epoch
into a run file, resumable from its last checkpoint with a bit-identical result.

Only the command line imports ``distill`` (see DESIGN.md); this module is part of it.

Random streams (all from ``run.seed``): fab keys of the trained population
``split(fold_in(key(seed), 1), P)``, of the students ``split(fold_in(key(seed), 2), S)``;
learning keys ``fold_in(key(seed), 11 | 12)`` (train | distill) folded with the epoch; evaluation
keys ``fold_in(key(seed), 21 | 22)`` folded with the epoch. A resumed epoch therefore draws the
same numbers as in an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import devices
import distill
from mortal import __version__, ff, runs
from mortal.config import ConfigError, RunConfig, apply_spec_overrides, load_config, to_toml
from mortal.data import DataError, Dataset
from mortal.data import load as load_dataset
from mortal.runlog import PopulationPlan, RunWriter, flatten_tree, unflatten_tree

TRAIN_METRICS = ("ff_loss", "readout_loss", "readout_acc", "g_pos", "g_neg",
                 "val_goodness_error", "val_softmax_error")
STUDENT_METRICS = (*TRAIN_METRICS, "val_agreement")
TRAIN_FINAL = ("test_goodness_error", "test_softmax_error")
STUDENT_FINAL = (*TRAIN_FINAL, "test_agreement", "test_kl")
_STREAM = {"train": 1, "students": 2}


class JobError(ValueError):
    """A mistake in what a job was asked to do (bad data, incompatible resume ...)."""


# ---------------------------------------------------------------------------------------------
# what a run needs: data, recipes, keys
# ---------------------------------------------------------------------------------------------


def load_data(cfg: RunConfig) -> Dataset:
    """The dataset, limited and checked (finite, in range, fitting the device)."""
    d = cfg.data
    if d.dataset.startswith("npz:"):
        ds = _load_npz(d.dataset[4:])
    else:
        try:
            ds = load_dataset(d.dataset, d.data_dir or None)
        except DataError:
            raise
        except (ValueError, KeyError) as exc:
            raise JobError(f"data.dataset: {exc}") from None
    if d.train_limit:
        ds = dataclasses.replace(ds, x_train=ds.x_train[: d.train_limit],
                                 y_train=ds.y_train[: d.train_limit])
    for split in ("train", "val", "test"):
        x = getattr(ds, f"x_{split}")
        if not np.all(np.isfinite(x)):
            bad = int(np.sum(~np.isfinite(x)))
            raise DataError(f"dataset {d.dataset}: {bad} NaN/Inf values in the {split} images; "
                            "clean the data")
    if ds.n_classes != cfg.train.n_classes:
        raise JobError(f"dataset {d.dataset} has {ds.n_classes} classes but train.n_classes = "
                       f"{cfg.train.n_classes}; set --set train.n_classes={ds.n_classes}")
    need = ds.n_inputs + (cfg.train.n_classes if cfg.train.label_placement == "prepend"
                          and cfg.train.mode == "supervised" else 0)
    if cfg.device.widths[0] != need:
        fix = ",".join(map(str, (need, *cfg.device.widths[1:])))
        raise JobError(f"device.widths[0] = {cfg.device.widths[0]} but {d.dataset} with "
                       f"label_placement '{cfg.train.label_placement}' needs {need} inputs; "
                       f"set --set device.widths=[{fix}]")
    steps = ds.x_train.shape[0] // cfg.train.batch_size
    if steps == 0:
        raise JobError(f"{ds.x_train.shape[0]} training images make no minibatch of "
                       f"train.batch_size = {cfg.train.batch_size}; lower it")
    return ds


def _load_npz(path: str) -> Dataset:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        z = np.load(p)
        arrays = {k: np.asarray(z[k]) for k in ("x_train", "y_train", "x_val", "y_val",
                                                "x_test", "y_test")}
    except KeyError as exc:
        raise DataError(f"data file {p} lacks array {exc}; it needs x_train, y_train, x_val, "
                        "y_val, x_test, y_test") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"data file {p} is not a readable .npz file ({exc})") from None
    for k in ("x_train", "x_val", "x_test"):
        if arrays[k].ndim != 2:
            raise DataError(f"data file {p}: {k} must be 2-D (N, pixels), got shape "
                            f"{arrays[k].shape}")
        arrays[k] = arrays[k].astype(np.float32)
    for k in ("y_train", "y_val", "y_test"):
        arrays[k] = arrays[k].astype(np.int32)
    n_in = arrays["x_train"].shape[1]
    side = math.isqrt(n_in)
    shape = (side, side) if side * side == n_in else (1, n_in)
    n_classes = int(max(arrays["y_train"].max(), arrays["y_val"].max(),
                        arrays["y_test"].max())) + 1
    try:
        return Dataset(name=p.stem, image_shape=shape, n_classes=n_classes, **arrays)
    except ValueError as exc:
        raise DataError(f"data file {p}: {exc}") from None


def device_spec(cfg: RunConfig, role: str) -> devices.DeviceSpec:
    """The recipe of the trained population (``train``) or of the students (``students``)."""
    spec = devices.preset(cfg.device.preset, cfg.device.widths)
    spec = apply_spec_overrides(spec, cfg.device.spec, "device.spec")
    if role == "students":
        if cfg.distill.preset and cfg.distill.preset != cfg.device.preset:
            spec = devices.preset(cfg.distill.preset, cfg.device.widths)
        spec = apply_spec_overrides(spec, cfg.distill.spec, "distill.spec")
    return spec


def learner_config(cfg: RunConfig, ds: Dataset, role: str) -> ff.FFConfig:
    """The learner config of a population (students: their epochs and distillation settings)."""
    c = cfg.train
    if c.mode == "unsupervised" and c.image_shape is None:
        c = dataclasses.replace(c, image_shape=ds.image_shape)
    if role == "students":
        c = dataclasses.replace(c, epochs=cfg.distill.epochs)
    return c


def distill_config(cfg: RunConfig) -> distill.DistillConfig:
    d = cfg.distill
    return distill.DistillConfig(temperature=d.temperature, source=d.source,
                                 hard_weight=d.hard_weight)


def fab_keys(cfg: RunConfig, role: str, n: int) -> jax.Array:
    return jax.random.split(jax.random.fold_in(jax.random.key(cfg.run.seed), _STREAM[role]), n)


def transfer_set(cfg: RunConfig, ds: Dataset) -> tuple[np.ndarray, np.ndarray | None, str]:
    """The distillation inputs, their labels (None when the set has none) and a description."""
    d = cfg.distill
    seed = cfg.run.seed
    x, y = ds.x_train, ds.y_train
    if d.transfer == "train":
        return x, y, f"{ds.name} training images ({x.shape[0]}), no labels"
    if d.transfer == "fraction":
        n = max(1, round(d.fraction * x.shape[0]))
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], n, replace=False))
        return x[idx], y[idx], f"{d.fraction:.1%} of {ds.name} training images ({n})"
    if d.transfer == "without":
        if any(not 0 <= c < ds.n_classes for c in d.leave_out):
            raise JobError(f"distill.leave_out {list(d.leave_out)} names classes outside "
                           f"0..{ds.n_classes - 1}")
        keep = ~np.isin(y, np.asarray(d.leave_out))
        if not keep.any():
            raise JobError("distill.leave_out leaves no image in the transfer set")
        return x[keep], y[keep], (f"{ds.name} training images without classes "
                                  f"{list(d.leave_out)} ({int(keep.sum())})")
    if d.transfer == "noise":
        return (distill.noise_inputs(x.shape[0], x.shape[1], seed), None,
                f"uniform noise images ({x.shape[0]})")
    return (distill.hybrid_inputs(x, x.shape[0], ds.image_shape, seed), None,
            f"hybrids of {ds.name} training images ({x.shape[0]})")


def checkpoint_tree(state: ff.FFState) -> dict[str, Any]:
    """What a checkpoint holds: everything of the learner state that changes (the device's
    physics is fixed at fab time and rebuilt from its fab key)."""
    return {"device_state": state.device.state, "opt_state": state.opt_state,
            "record": state.record, "pending": state.pending, "readout": state.readout,
            "step": state.step}


def restore(template: ff.FFState, leaves: dict[str, np.ndarray]) -> ff.FFState:
    tree = checkpoint_tree(template)
    parts = {k: unflatten_tree(k, v, leaves) for k, v in tree.items()}
    device = dataclasses.replace(template.device, state=parts.pop("device_state"))
    return dataclasses.replace(template, device=device, **parts)


def _checkpoint_leaves(state: ff.FFState) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in checkpoint_tree(state).items():
        out.update(flatten_tree(k, v))
    return out


# ---------------------------------------------------------------------------------------------
# evaluation helpers (measure only)
# ---------------------------------------------------------------------------------------------


def _scores_one(state: ff.FFState, x: jax.Array, key: jax.Array, cfg: ff.FFConfig,
                chunk: int) -> jax.Array:
    n = x.shape[0]
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xp = jnp.concatenate([x, jnp.zeros((pad, x.shape[1]), x.dtype)]) if pad else x
    keys = jax.random.split(key, n_chunks)

    def one(inp: tuple[jax.Array, jax.Array]) -> jax.Array:
        xc, k = inp
        if cfg.mode == "supervised":
            return ff.goodness_scores(state.device, xc, cfg, k, ff.BENCH)
        return ff.readout_logits(state, xc, cfg, k, ff.BENCH)

    s = jax.lax.map(one, (xp.reshape(n_chunks, chunk, -1), keys))
    return s.reshape(n_chunks * chunk, -1)[:n]


population_scores = jax.jit(jax.vmap(_scores_one, in_axes=(0, None, 0, None, None)),
                            static_argnames=("cfg", "chunk"))


def _eval(states: ff.FFState, x: np.ndarray, y: np.ndarray, key: jax.Array, cfg: ff.FFConfig
          ) -> dict[str, np.ndarray]:
    p = int(states.step.shape[0])
    r = ff.evaluate_population(states, jnp.asarray(x), jnp.asarray(y),
                               jax.random.split(key, p), cfg, 500, ff.BENCH)
    return {k: np.asarray(v) for k, v in r.items()}


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------


@dataclass
class Reporter:
    """How a job talks to the user: a progress bar over epochs and a line per epoch."""

    progress: bool = True
    quiet: bool = False

    def bar(self, total: int, desc: str, initial: int = 0) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit="epoch", leave=False,
                    disable=None if self.progress else True, file=sys.stderr)

    def line(self, text: str) -> None:
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)


def _pct(a: np.ndarray) -> str:
    a = np.asarray(a, np.float64)
    if not np.isfinite(a).any():
        return "-"
    return (f"{100 * np.nanmedian(a):.1f}% ({100 * np.nanmin(a):.1f}–{100 * np.nanmax(a):.1f})")


def source_revision() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _library_versions() -> dict[str, str]:
    import h5py
    import jaxlib
    import optax

    return {"python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "numpy": np.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "optax": optax.__version__}


def _host() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()]}


class Job:
    """One run: build everything from the config, then execute (or continue) its phases."""

    def __init__(self, cfg: RunConfig, reporter: Reporter) -> None:
        self.cfg = cfg
        self.rep = reporter
        self.ds = load_data(cfg)
        self.root = jax.random.key(cfg.run.seed)
        self.populations: dict[str, dict[str, Any]] = {}
        if "train" in cfg.run.phases:
            self._prepare("train", cfg.device.population)
        if "distill" in cfg.run.phases:
            self._prepare("students", cfg.distill.students)
            self.x_transfer, self.y_transfer, self.transfer_text = transfer_set(cfg, self.ds)
            if ff.steps_per_epoch(self.x_transfer.shape[0], self.populations["students"]["cfg"]
                                  ) == 0:
                raise JobError(f"the transfer set ({self.x_transfer.shape[0]} images) makes no "
                               f"minibatch of {cfg.train.batch_size}; use a larger fraction")

    def _prepare(self, role: str, n: int) -> None:
        spec = device_spec(self.cfg, role)
        cfg = learner_config(self.cfg, self.ds, role)
        keys = fab_keys(self.cfg, role, n)
        population = jax.vmap(devices.fabricate, in_axes=(None, 0))(spec, keys)
        if role == "students":
            cfg_init = distill.student_config(cfg, distill_config(self.cfg))
            n_examples = self._transfer_size()
        else:
            cfg_init, n_examples = cfg, self.ds.x_train.shape[0]
        try:
            state = ff.init_population(population, cfg_init, ff.steps_per_epoch(n_examples,
                                                                                 cfg_init))
        except ValueError as exc:
            raise JobError(str(exc)) from None
        self.populations[role] = {"spec": spec, "cfg": cfg, "keys": keys, "state": state,
                                  "template": state}

    def _transfer_size(self) -> int:
        x, _, _ = transfer_set(self.cfg, self.ds)
        return x.shape[0]

    def plans(self) -> dict[str, PopulationPlan]:
        out = {}
        for role, p in self.populations.items():
            out[role] = PopulationPlan(
                role=role, recipe=p["spec"].to_dict(),
                fab_keys=np.asarray(jax.random.key_data(p["keys"])),
                key_impl=str(jax.random.key_impl(p["keys"])),
                planned_epochs=p["cfg"].epochs,
                metrics=STUDENT_METRICS if role == "students" else TRAIN_METRICS,
                final=STUDENT_FINAL if role == "students" else TRAIN_FINAL,
                checkpoint=_checkpoint_leaves(p["state"]))
        return out

    def attributes(self, command_line: str) -> dict[str, Any]:
        return {"mortal_version": __version__, "source_revision": source_revision(),
                "library_versions": _library_versions(), "host": _host(),
                "command_line": command_line, "config": to_toml(self.cfg),
                "seed": self.cfg.run.seed,
                "seeds": {"run": self.cfg.run.seed, "streams": "see mortal.cli_jobs"}}

    # -- execution ---------------------------------------------------------------------------

    def execute(self, writer: RunWriter) -> None:
        if "train" in self.cfg.run.phases:
            self._phase(writer, "train")
            if np.isnan(runs_final(writer, "train")).all():
                self._final(writer, "train", None)
        if "distill" in self.cfg.run.phases:
            self._distill(writer)
        writer.finish()

    def _restore(self, writer: RunWriter, role: str) -> int:
        """Load the newest checkpoint into the population's state; returns its epoch."""
        p = self.populations[role]
        if writer.epochs_done(role) == 0:
            return 0
        epoch, leaves = writer.checkpoint(role)
        p["state"] = restore(p["template"], leaves)
        return epoch

    def _phase(self, writer: RunWriter, role: str, teachers: ff.FFState | None = None,
               teacher_val: np.ndarray | None = None) -> None:
        p = self.populations[role]
        cfg: ff.FFConfig = p["cfg"]
        start = self._restore(writer, role)
        stream = 11 if role == "train" else 12
        learn_key = jax.random.fold_in(self.root, stream)
        eval_key = jax.random.fold_in(self.root, stream + 10)
        n = int(p["keys"].shape[0])
        if role == "train":
            x, t = jnp.asarray(self.ds.x_train), jnp.asarray(self.ds.y_train)
        else:
            x = jnp.asarray(self.x_transfer)
            t = None if self.y_transfer is None or self.cfg.distill.hard_weight == 0 else (
                jnp.asarray(self.y_transfer))
        x_val, y_val = self.ds.x_val, self.ds.y_val
        if self.cfg.data.eval_limit:
            x_val, y_val = x_val[: self.cfg.data.eval_limit], y_val[: self.cfg.data.eval_limit]
        base_wall = writer.last_wall_time(role)
        t0 = time.perf_counter()
        label = "train" if role == "train" else "distill"
        if start:
            self.rep.line(f"{label}: resuming after epoch {start} of {cfg.epochs}")
        bar = self.rep.bar(cfg.epochs, label, initial=start)
        try:
            for e in range(start, cfg.epochs):
                te = time.perf_counter()
                if role == "train":
                    keys, order = ff.epoch_keys(learn_key, e, n, cfg)
                    p["state"], m = ff.population_epoch(p["state"], x, t, keys, order, cfg=cfg,
                                                        bench=ff.BENCH)
                else:
                    k = jax.random.fold_in(learn_key, e)
                    p["state"], m = distill.distill_epoch(
                        p["state"], teachers, x, t, k,
                        jax.random.split(jax.random.fold_in(k, 1), n), cfg=cfg,
                        dcfg=distill_config(self.cfg), student_bench=ff.BENCH,
                        teacher_bench=ff.BENCH)
                metrics = {k: np.asarray(v) for k, v in m.items()}
                last = e + 1 == cfg.epochs
                if (e + 1) % self.cfg.data.eval_every == 0 or last:
                    r = _eval(p["state"], x_val, y_val, jax.random.fold_in(eval_key, e), cfg)
                    metrics["val_goodness_error"] = r["goodness_error"]
                    metrics["val_softmax_error"] = r["softmax_error"]
                    if teacher_val is not None:
                        metrics["val_agreement"] = np.mean(r["goodness_pred"] == teacher_val,
                                                           axis=-1)
                ck = None
                if (e + 1) % self.cfg.run.checkpoint_every == 0 or last:
                    ck = _checkpoint_leaves(p["state"])
                step = int(np.asarray(p["state"].step)[0])
                writer.append_epoch(role, e + 1, step, base_wall + time.perf_counter() - t0,
                                    metrics, ck)
                bar.update(1)
                line = (f"{label} epoch {e + 1:>3}/{cfg.epochs}  ff_loss "
                        f"{np.mean(metrics['ff_loss']):.3f}")
                if "val_goodness_error" in metrics:
                    line += (f"  val error goodness {_pct(metrics['val_goodness_error'])} "
                             f"softmax {_pct(metrics['val_softmax_error'])}")
                if "val_agreement" in metrics:
                    line += f"  agreement {_pct(metrics['val_agreement'])}"
                self.rep.line(line + f"  {time.perf_counter() - te:.1f} s")
        finally:
            bar.close()

    def _final(self, writer: RunWriter, role: str, teacher_scores: np.ndarray | None) -> dict[
            str, np.ndarray]:
        p = self.populations[role]
        key = jax.random.fold_in(self.root, 31 if role == "train" else 32)
        r = _eval(p["state"], self.ds.x_test, self.ds.y_test, key, p["cfg"])
        out = {"test_goodness_error": r["goodness_error"],
               "test_softmax_error": r["softmax_error"]}
        if teacher_scores is not None:
            s = np.asarray(population_scores(p["state"], jnp.asarray(self.ds.x_test),
                                             jax.random.split(key, p["keys"].shape[0]),
                                             p["cfg"], 500))
            temp = self.cfg.distill.temperature
            fid = [distill.fidelity(_softmax(teacher_scores / temp), _softmax(si / temp),
                                    self.ds.y_test, self.ds.n_classes) for si in s]
            out["test_agreement"] = np.array([f["agreement"] for f in fid])
            out["test_kl"] = np.array([f["kl"] for f in fid])
        writer.write_final(role, out)
        return out

    def _teacher(self, writer: RunWriter) -> tuple[ff.FFState, str, int]:
        """The teacher: from this run's trained population, or from a finished run file."""
        d = self.cfg.distill
        if "train" in self.cfg.run.phases:
            pop = self.populations["train"]["state"]
            val = runs_metrics_last(writer, "train")
            idx = int(np.argmin(val)) if d.teacher == "best" else int(d.teacher)
            size = self.cfg.device.population
            if idx >= size:
                raise JobError(f"distill.teacher = {idx} is out of range: the population has "
                               f"devices 0..{size - 1}")
            return jax.tree.map(lambda a: a[idx: idx + 1], pop), f"train/{idx}", idx
        return load_teacher(d.teacher_run, d.teacher, self.cfg)

    def _distill(self, writer: RunWriter) -> None:
        teacher, name, _ = self._teacher(writer)
        tcfg = self.populations["students"]["cfg"]
        key = jax.random.fold_in(self.root, 40)
        teacher_val = _eval(teacher, self._val()[0], self._val()[1], key, tcfg)["goodness_pred"]
        if not writer.lineage():
            dcfg = distill_config(self.cfg)
            spec = self.populations["students"]["spec"]
            writer.add_lineage([
                distill.lineage_record(1, name, f"students/{i}", self.transfer_text, dcfg,
                                       self.cfg.run.seed, spec.name, self.cfg.distill.epochs)
                for i in range(self.cfg.distill.students)])
        self._phase(writer, "students", teachers=teacher, teacher_val=teacher_val[0])
        t_scores = np.asarray(population_scores(
            teacher, jnp.asarray(self.ds.x_test), jax.random.split(
                jax.random.fold_in(self.root, 41), 1), tcfg, 500))[0]
        self._final(writer, "students", t_scores)

    def _val(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.ds.x_val, self.ds.y_val
        if self.cfg.data.eval_limit:
            return x[: self.cfg.data.eval_limit], y[: self.cfg.data.eval_limit]
        return x, y


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def runs_metrics_last(writer: RunWriter, role: str) -> np.ndarray:
    """The newest validation goodness error of each device (from the file: identical after a
    resume)."""
    ds = writer._f["populations"][role]["metrics"]["val_goodness_error"]
    vals = ds[()]
    finite = [r for r in vals if np.isfinite(r).all()]
    if not finite:
        raise JobError("no validation error recorded for the trained population")
    return finite[-1]


def runs_final(writer: RunWriter, role: str) -> np.ndarray:
    return writer._f["populations"][role]["final"]["test_goodness_error"][()]


def load_teacher(path: str, which: str, cfg: RunConfig) -> tuple[ff.FFState, str, int]:
    """A trained device from a finished run file, as a one-member learner population."""
    if not path:
        raise JobError("distill.teacher_run is empty and this run has no train phase; name a "
                       "trained run file with --teacher RUN.h5")
    info = runs.population_info(path, "train")
    if info["epochs_done"] == 0:
        raise JobError(f"{path} holds no trained epoch to distil from")
    if which == "best":
        val = runs.metrics(path, "train")["val_goodness_error"]
        finite = [r for r in val if np.isfinite(r).all()]
        idx = int(np.argmin(finite[-1]))
    else:
        idx = int(which)
    if not 0 <= idx < info["size"]:
        raise JobError(f"teacher device {idx} is out of range: {path} has devices "
                       f"0..{info['size'] - 1}")
    tcfg_text = runs.config_text(path)
    tcfg = load_config(text=tcfg_text)
    spec = devices.DeviceSpec.from_dict(info["recipe"])
    if spec.widths != cfg.device.widths:
        raise JobError(f"the teacher's widths {list(spec.widths)} differ from device.widths "
                       f"{list(cfg.device.widths)}; students must read the same inputs")
    key = jax.random.wrap_key_data(np.asarray(info["fab_keys"][idx: idx + 1]),
                                   impl=info["key_impl"])
    population = jax.vmap(devices.fabricate, in_axes=(None, 0))(spec, key)
    ds_steps = 1  # the schedule's length does not matter for a teacher that is only measured
    template = ff.init_population(population, tcfg.train, ds_steps)
    _, leaves = runs.checkpoint(path, "train")
    leaves = {k: v[idx: idx + 1] for k, v in leaves.items()}
    return restore(template, leaves), f"{path}:train/{idx}", idx


def check_resume_config(path: str | os.PathLike[str], requested: RunConfig | None) -> RunConfig:
    """The stored config of a run to resume; if the user also gave one, it must be identical."""
    stored = load_config(text=runs.config_text(path))
    if requested is not None and requested != stored:
        from mortal.config import differences

        diff = differences(stored, requested)
        raise ConfigError(f"cannot resume {path} with a different config ({', '.join(diff[:4])}"
                          f"{' ...' if len(diff) > 4 else ''} differ); drop --config/--set to "
                          "resume as it was, or start a new run")
    return stored


def run_job(cfg: RunConfig, path: str | os.PathLike[str], *, command_line: str,
            reporter: Reporter, force: bool = False, resume: bool = False,
            before_epochs: Callable[[Job], None] | None = None) -> Job:
    """Create (or resume) the run file at ``path`` and execute the plan."""
    job = Job(cfg, reporter)
    if before_epochs is not None:
        before_epochs(job)
    if resume:
        writer = RunWriter.resume(path)
    else:
        writer = RunWriter.create(path, attributes=job.attributes(command_line),
                                  populations=job.plans(), force=force)
    with writer:
        job.execute(writer)
    return job
