"""The command line's jobs: a run is a plan of phases (train, distill) executed epoch by epoch
into a run file, resumable from its last checkpoint with a bit-identical result.

Only the command line imports ``distill`` (see DESIGN.md); this module is part of it.

Random streams (all from ``run.seed``): fab keys of the trained population
``split(fold_in(key(seed), 1), P)``, of the students ``split(fold_in(key(seed), 2), S)`` (generation
g > 1: ``fold_in`` of that with g);
learning keys ``fold_in(key(seed), 11 | 12)`` (train | distill) folded with the epoch; evaluation
keys ``fold_in(key(seed), 21 | 22)`` folded with the epoch. A resumed epoch therefore draws the
same numbers as in an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import devices
import distill
from mortal import __version__, ff, parallel, runs
from mortal.config import (
    ConfigError,
    DistillSection,
    RunConfig,
    apply_spec_overrides,
    load_config,
    to_toml,
)
from mortal.data import DataError, Dataset
from mortal.data import load as load_dataset
from mortal.runlog import PopulationPlan, RunWriter, flatten_tree, unflatten_tree
from mortal.xla_cpu import numerics_flags, xla_flags

TRAIN_METRICS = ("ff_loss", "readout_loss", "readout_acc", "g_pos", "g_neg",
                 "val_goodness_error", "val_softmax_error")
STUDENT_METRICS = (*TRAIN_METRICS, "val_agreement")
TRAIN_FINAL = ("test_goodness_error", "test_softmax_error")
STUDENT_FINAL = (*TRAIN_FINAL, "test_agreement", "test_kl")
CORRECTED_FINAL = ("test_corrected_error",)
LEFT_OUT_FINAL = ("test_left_out_accuracy", "test_left_out_accuracy_corrected")


def student_final(d: DistillSection) -> tuple[str, ...]:
    """The final results of a student population under the ``[distill]`` section ``d``."""
    if not d.bias_correction:
        return STUDENT_FINAL
    return (*STUDENT_FINAL, *CORRECTED_FINAL, *(LEFT_OUT_FINAL if d.transfer == "without" else ()))


def generation_role(g: int) -> str:
    """The population name of distillation generation ``g`` (1-based)."""
    return "students" if g == 1 else f"students_g{g}"


def generation_of(role: str) -> int:
    return 0 if role == "train" else 1 if role == "students" else int(role.split("_g")[1])


def _stream(role: str, base: int) -> int:
    """Random stream numbers: train ``base + 1``, generation g ``base + 2`` (+ 1000·(g − 1))."""
    g = generation_of(role)
    return base + 1 if g == 0 else base + 2 + 1000 * (g - 1)


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
            raise  # already names the file and the fix
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
        advice = teacher_data_advice(cfg)
        if advice:  # the widths are the teacher's: its data is the fix, not other widths
            raise JobError(f"device.widths[0] = {cfg.device.widths[0]} (the teacher's) but "
                           f"{d.dataset} needs {need} inputs: {advice}")
        fix = ",".join(map(str, (need, *cfg.device.widths[1:])))
        raise JobError(f"device.widths[0] = {cfg.device.widths[0]} but {d.dataset} with "
                       f"label_placement '{cfg.train.label_placement}' needs {need} inputs; "
                       f"set --set device.widths=[{fix}]")
    steps = ds.x_train.shape[0] // cfg.train.batch_size
    if steps == 0:
        raise JobError(f"{ds.x_train.shape[0]} training images make no minibatch of "
                       f"train.batch_size = {cfg.train.batch_size}; lower it")
    return ds


_NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _npz_error(p: Path, exc: BaseException) -> DataError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DataError(f"data file {p} is not a readable .npz archive ({reason}); write it with "
                     "numpy.savez(FILE, x_train=..., y_train=..., x_val=..., y_val=..., "
                     "x_test=..., y_test=...)")


# what fixes the inputs a device reads: the data and how the labels enter it
_DATA_KEYS = (("data", "dataset"), ("data", "data_dir"), ("train", "n_classes"),
              ("train", "label_placement"), ("train", "mode"))


def teacher_data_advice(cfg: RunConfig, teacher_cfg: RunConfig | None = None) -> str:
    """For a distillation from a run file whose students cannot read the teacher's inputs:
    the ``--set`` items that put the students on the data the teacher was trained on ("" when
    the data agrees, or for a run without a teacher file)."""
    d = cfg.distill
    if teacher_cfg is None:
        if "train" in cfg.run.phases or not d.teacher_run:
            return ""
        try:
            teacher_cfg = load_config(text=runs.config_text(d.teacher_run))
        except (runs.RunFileError, ConfigError, OSError):
            return ""
    sets = []
    for section, key in _DATA_KEYS:
        theirs = getattr(getattr(teacher_cfg, section), key)
        if theirs != getattr(getattr(cfg, section), key):
            sets.append(f"--set {section}.{key}={_set_value(theirs)}")
    if not sets:
        return ""
    return (f"the teacher run {d.teacher_run} was trained on other data; distil on the same: "
            f"{' '.join(sets)}")


def _set_value(v: Any) -> str:
    """``v`` as the value of a ``--set`` item (a string plain where it reads back as itself)."""
    from mortal.config import parse_set

    if isinstance(v, str) and v and parse_set(f"k={v}")[1] == v and " " not in v:
        return v
    return json.dumps(v)


def _load_npz(path: str) -> Dataset:
    """An ``npz:`` dataset, checked whole before anything is built from it: the six arrays,
    images 2-D ``(N, pixels)`` of numbers and of one width in every split, labels 1-D whole
    numbers >= 0 (at least two classes), one per image, and no split empty."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"data file {p} is a directory; name an .npz file")
    if not p.is_file():
        raise DataError(f"data file {p} does not exist")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _npz_error(p, exc) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError(f"data file {p} holds one array (an .npy file), not an .npz archive of "
                        f"{', '.join(_NPZ_KEYS)}; write it with numpy.savez")
    with z:
        missing = [k for k in _NPZ_KEYS if k not in z.files]
        if missing:
            raise DataError(f"data file {p} lacks {', '.join(missing)}; it needs "
                            f"{', '.join(_NPZ_KEYS)}")
        try:
            arrays = {k: np.asarray(z[k]) for k in _NPZ_KEYS}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise _npz_error(p, exc) from None
    width = arrays["x_train"].shape[1] if arrays["x_train"].ndim == 2 else None
    for split in ("train", "val", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        where = f"data file {p}:"
        if x.ndim != 2:
            raise DataError(f"{where} x_{split} must be 2-D (images, pixels), got shape "
                            f"{x.shape}; flatten the images")
        if x.dtype.kind not in "biuf":
            raise DataError(f"{where} x_{split} must hold numbers, got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise DataError(f"{where} the {split} split is empty (x_{split} has shape "
                            f"{x.shape}); every split needs at least one image")
        if x.shape[1] != width or width == 0:
            raise DataError(f"{where} x_{split} images are {x.shape[1]} pixels wide but "
                            f"x_train's are {width}; every split needs the same (non-zero) "
                            "width")
        if y.ndim != 1:
            raise DataError(f"{where} y_{split} must be 1-D (one class index per image), got "
                            f"shape {y.shape}")
        if y.shape[0] != x.shape[0]:
            raise DataError(f"{where} x_{split} has {x.shape[0]} images but y_{split} has "
                            f"{y.shape[0]} labels")
        whole = y.dtype.kind in "iu" or (y.dtype.kind == "f" and bool(
            np.all(np.isfinite(y)) and np.all(y == np.round(y))))
        if not whole:
            raise DataError(f"{where} y_{split} must hold class indices 0, 1, 2 ... (whole "
                            f"numbers), got dtype {y.dtype}"
                            + ("" if y.dtype.kind in "iuf" else "; map the names to indices"))
        if y.min() < 0 or y.max() >= 2**31:
            bad = (y.min() if y.min() < 0 else y.max()).item()
            raise DataError(f"{where} y_{split} holds the label {bad}; class indices run "
                            "from 0 to (number of classes - 1)")
        arrays[f"x_{split}"] = x.astype(np.float32)
        arrays[f"y_{split}"] = y.astype(np.int32)
    n_classes = int(max(arrays["y_train"].max(), arrays["y_val"].max(),
                        arrays["y_test"].max())) + 1
    if n_classes < 2:
        raise DataError(f"data file {p}: every label is 0; a classifier needs at least two "
                        "classes")
    assert width is not None
    side = math.isqrt(width)
    shape = (side, side) if side * side == width else (1, width)
    try:
        return Dataset(name=p.stem, image_shape=shape, n_classes=n_classes, **arrays)
    except ValueError as exc:
        raise DataError(f"data file {p}: {exc}") from None


def device_spec(cfg: RunConfig, role: str) -> devices.DeviceSpec:
    """The recipe of the trained population (``train``) or of the students (``students``)."""
    spec = devices.preset(cfg.device.preset, cfg.device.widths)
    spec = apply_spec_overrides(spec, cfg.device.spec, "device.spec")
    if role != "train":
        if cfg.distill.preset and cfg.distill.preset != cfg.device.preset:
            spec = devices.preset(cfg.distill.preset, cfg.device.widths)
        spec = apply_spec_overrides(spec, cfg.distill.spec, "distill.spec")
    return spec.replace(matmul_dtype=cfg.device.matmul_dtype)


def learner_config(cfg: RunConfig, ds: Dataset, role: str) -> ff.FFConfig:
    """The learner config of a population (students: their epochs and distillation settings)."""
    c = cfg.train
    if c.mode == "unsupervised" and c.image_shape is None:
        c = dataclasses.replace(c, image_shape=ds.image_shape)
    if role != "train":
        c = dataclasses.replace(c, epochs=cfg.distill.epochs)
    return c


def distill_config(cfg: RunConfig) -> distill.DistillConfig:
    d = cfg.distill
    return distill.DistillConfig(temperature=d.temperature, source=d.source,
                                 hard_weight=d.hard_weight,
                                 positive_temperature=d.positive_temperature,
                                 teacher_reads=d.teacher_reads,
                                 goodness_kl_weight=d.goodness_kl_weight,
                                 goodness_kl_temperature=d.goodness_kl_temperature,
                                 goodness_kl_start=d.goodness_kl_start,
                                 negatives=None if d.negatives == "learner" else d.negatives,
                                 negative_belief=None if d.negative_belief == "learner"
                                 else d.negative_belief)


def fab_keys(cfg: RunConfig, role: str, n: int) -> jax.Array:
    g = generation_of(role)
    base = jax.random.fold_in(jax.random.key(cfg.run.seed), 1 if g == 0 else 2)
    if g > 1:
        base = jax.random.fold_in(base, g)
    return jax.random.split(base, n)


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
    physics is fixed at fab time and rebuilt from its fab key), the device state as separate
    float32 conductances and read offsets (``devices.StoredState``)."""
    return {"device_state": state.device.state.unpacked(), "opt_state": state.opt_state,
            "record": state.record, "pending": state.pending, "readout": state.readout,
            "step": state.step}


def restore(template: ff.FFState, leaves: dict[str, np.ndarray]) -> ff.FFState:
    tree = checkpoint_tree(template)
    parts = {k: unflatten_tree(k, v, leaves) for k, v in tree.items()}
    device = dataclasses.replace(template.device, state=parts.pop("device_state").packed())
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


@functools.lru_cache(maxsize=16)
def _scores_program(cfg: ff.FFConfig, chunk: int, mesh: Any) -> Any:
    def local(states: ff.FFState, x: jax.Array, keys: jax.Array) -> jax.Array:
        return jax.lax.map(lambda a: _scores_one(a[0], x, a[1], cfg, chunk), (states, keys))

    return parallel.over_population(local, mesh, (True, False, True))


def population_scores(states: ff.FFState, x: jax.Array, keys: jax.Array, cfg: ff.FFConfig,
                      chunk: int, mesh: Any = None) -> np.ndarray:
    """Class scores ``(P, N, C)`` of every device (goodness over all labels; readout logits in
    unsupervised mode)."""
    return parallel.to_host(_scores_program(cfg, chunk, mesh)(
        states, parallel.replicate(jnp.asarray(x), mesh), parallel.shard(keys, mesh)))


@functools.lru_cache(maxsize=16)
def _distill_program(cfg: ff.FFConfig, dcfg: distill.DistillConfig, mesh: Any,
                     labelled: bool, chunk: int) -> Any:
    def local(students: ff.FFState, teachers: ff.FFState, x: jax.Array, labels: Any,
              key: jax.Array, student_keys: jax.Array) -> Any:
        n = jax.tree.leaves(students)[0].shape[0]
        return distill.distill_epoch_fn(
            students, teachers, x, labels if labelled else None, key, student_keys, cfg, dcfg,
            ff.BENCH, ff.BENCH, chunk=parallel.shard_chunk(chunk, n))

    return parallel.over_population(local, mesh, (True, False, False, False, False, True),
                                    donate=(0,))


def _eval(states: ff.FFState, x: np.ndarray, y: np.ndarray, key: jax.Array, cfg: ff.FFConfig,
          mesh: Any = None, group: int = 1) -> dict[str, np.ndarray]:
    p = int(states.step.shape[0])
    keys = jax.random.split(key, p)
    if mesh is not None and p % mesh.size:
        mesh = None  # a single teacher: measured on one accelerator
    keys = parallel.shard(keys, mesh)
    r = parallel.evaluate(states, parallel.replicate(jnp.asarray(x), mesh),
                          parallel.replicate(jnp.asarray(y), mesh), keys, cfg=cfg, chunk=500,
                          bench=ff.BENCH, mesh=mesh, group=group)
    return parallel.to_host(r)


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
            "jax_devices": [str(d) for d in jax.devices()],
            "xla_flags": xla_flags()}


@dataclass
class Resume:
    """Where a population stands when a run starts: from scratch, or from a run file."""

    start: int = 0  # epochs already done (the newest checkpoint's epoch)
    leaves: dict[str, np.ndarray] | None = None  # that checkpoint
    wall: float = 0.0  # seconds spent in this phase so far
    final_done: bool = False
    last_val: np.ndarray | None = None  # newest validation goodness error per device


def read_resume(path: str | os.PathLike[str], roles: list[str]
                ) -> tuple[dict[str, Resume], list[dict[str, Any]]]:
    """What a resumed run continues from (read before the writer replaces the file)."""
    out = {}
    for role in roles:
        r = Resume()
        if runs.population_info(path, role)["epochs_done"] > 0:
            try:
                r.start, r.leaves = runs.checkpoint(path, role)
            except runs.RunFileCutShortError:
                raise  # a damaged file is refused, not trained again from scratch
            except runs.RunFileError:  # no completed checkpoint yet
                r.start = 0
        if r.start:
            m = runs.metrics(path, role)
            r.wall = float(m["wall_time"][r.start - 1])
            val = [v for v in m["val_goodness_error"][: r.start] if np.isfinite(v).all()]
            r.last_val = val[-1] if val else None
            fin = runs.final(path, role)["test_goodness_error"]
            r.final_done = r.start == runs.population_info(path, role)["planned_epochs"] and (
                bool(np.isfinite(fin).all()))
        out[role] = r
    return out, runs.lineage(path)


class NullWriter:
    """Stands in for the run file on processes other than 0 (they compute, 0 writes)."""

    def append_epoch(self, *a: Any, **k: Any) -> None: ...
    def write_final(self, *a: Any, **k: Any) -> None: ...
    def add_lineage(self, *a: Any, **k: Any) -> None: ...
    def finish(self) -> None: ...
    def close(self) -> None: ...

    def __enter__(self) -> NullWriter:
        return self

    def __exit__(self, *exc: object) -> None: ...


class Job:
    """One run: build everything from the config, then execute (or continue) its phases.

    ``mesh``: a ``parallel.population_mesh`` to split the populations over (None: one
    accelerator). Results do not depend on it.
    """

    def __init__(self, cfg: RunConfig, reporter: Reporter, mesh: Any = None) -> None:
        if "train" not in cfg.run.phases and not cfg.distill.teacher_run:
            teacher_path("")  # a distillation without a teacher: refused before any work
        self.cfg = cfg
        self.rep = reporter
        self.mesh = mesh
        self.ds = load_data(cfg)
        self.root = jax.random.key(cfg.run.seed)
        self.populations: dict[str, dict[str, Any]] = {}
        self.resume: dict[str, Resume] = {}
        self.lineage_rows: list[dict[str, Any]] = []
        self.teacher: Teacher | None = None  # a teacher from a run file, once checked
        if "distill" in cfg.run.phases:
            self.x_transfer, self.y_transfer, self.transfer_text = transfer_set(cfg, self.ds)
        if "train" in cfg.run.phases:
            self._prepare("train", cfg.device.population)
        if "distill" in cfg.run.phases:
            for g in range(1, cfg.distill.generations + 1):
                self._prepare(generation_role(g), cfg.distill.students)
            if ff.steps_per_epoch(self.x_transfer.shape[0], self.populations["students"]["cfg"]
                                  ) == 0:
                raise JobError(f"the transfer set ({self.x_transfer.shape[0]} images) makes no "
                               f"minibatch of {cfg.train.batch_size}; use a larger fraction")
            teacher = cfg.distill.teacher
            if ("train" in cfg.run.phases and teacher != "best"
                    and not 0 <= int(teacher) < cfg.device.population):
                raise JobError(f"distill.teacher = {teacher} is out of range: the population "
                               f"has devices 0..{cfg.device.population - 1}")

    def check_teacher(self, resumed: str | os.PathLike[str] | None = None) -> None:
        """Read the teacher of a distillation from a run file now, so that a bad one fails
        before anything is written (and before ``--force`` replaces an old file); the
        distillation then uses exactly this read. A new run records its fingerprint (see
        ``attributes``) and warns when the teacher run is unfinished; a resumed one
        (``resumed``: its run file) refuses a teacher that is no longer the recorded one."""
        d = self.cfg.distill
        if "distill" not in self.cfg.run.phases or "train" in self.cfg.run.phases:
            return
        t = read_teacher(teacher_path(d.teacher_run, resumed), d.teacher, self.cfg)
        if resumed is None:
            warning = unfinished_teacher_warning(t)
            if warning and parallel.is_writer():
                print(warning, file=sys.stderr, flush=True)
        else:
            recorded = runs.attributes(resumed).get("teacher_fingerprint")
            if recorded is not None and recorded != t.fingerprint:
                raise JobError(f"teacher run {t.path} has changed since {resumed} started "
                               "distilling from it (retrained or replaced); resuming would mix "
                               "two teachers: start a new distillation from it instead")
        self.teacher = t

    def _prepare(self, role: str, n: int) -> None:
        spec = device_spec(self.cfg, role)
        cfg = learner_config(self.cfg, self.ds, role)
        keys = fab_keys(self.cfg, role, n)
        population = jax.vmap(devices.fabricate, in_axes=(None, 0))(spec, keys)
        if role != "train":
            cfg_init = distill.student_config(cfg, distill_config(self.cfg))
            n_examples = self.x_transfer.shape[0]
        else:
            cfg_init, n_examples = cfg, self.ds.x_train.shape[0]
        try:
            state = ff.init_population(population, cfg_init, ff.steps_per_epoch(n_examples,
                                                                                 cfg_init))
        except ValueError as exc:
            raise JobError(str(exc)) from None
        self.populations[role] = {"spec": spec, "cfg": cfg, "keys": keys, "template": state,
                                  "state": parallel.shard(state, self.mesh)}
        self.resume[role] = Resume()

    def load_resume(self, path: str | os.PathLike[str]) -> None:
        """Continue from a run file: restore each population's newest checkpoint."""
        self.resume, self.lineage_rows = read_resume(path, list(self.populations))
        for role, r in self.resume.items():
            if r.leaves is not None:
                p = self.populations[role]
                p["state"] = parallel.shard(restore(p["template"], r.leaves), self.mesh)

    def plans(self) -> dict[str, PopulationPlan]:
        out = {}
        for role, p in self.populations.items():
            out[role] = PopulationPlan(
                role=role, recipe=p["spec"].to_dict(),
                fab_keys=np.asarray(jax.random.key_data(p["keys"])),
                key_impl=str(jax.random.key_impl(p["keys"])),
                planned_epochs=p["cfg"].epochs,
                metrics=STUDENT_METRICS if role != "train" else TRAIN_METRICS,
                final=student_final(self.cfg.distill) if role != "train" else TRAIN_FINAL,
                checkpoint=_checkpoint_leaves(p["template"]))
        return out

    def attributes(self, command_line: str) -> dict[str, Any]:
        return {"mortal_version": __version__, "source_revision": source_revision(),
                "library_versions": _library_versions(), "host": _host(),
                "command_line": command_line, "config": to_toml(self.cfg),
                "seed": self.cfg.run.seed,
                "seeds": {"run": self.cfg.run.seed, "streams": "see mortal.cli_jobs"},
                **({"teacher_fingerprint": self.teacher.fingerprint}
                   if self.teacher is not None else {})}

    # -- execution ---------------------------------------------------------------------------

    def execute(self, writer: Any) -> None:
        if "train" in self.cfg.run.phases:
            self._phase(writer, "train")
            if not self.resume["train"].final_done:
                self._final(writer, "train", None)
        if "distill" in self.cfg.run.phases:
            self._distill(writer)
        writer.finish()

    def _phase(self, writer: Any, role: str, teachers: ff.FFState | None = None,
               teacher_val: np.ndarray | None = None) -> None:
        p = self.populations[role]
        cfg: ff.FFConfig = p["cfg"]
        resume = self.resume[role]
        start = resume.start
        learn_key = jax.random.fold_in(self.root, _stream(role, 10))
        eval_key = jax.random.fold_in(self.root, _stream(role, 20))
        n = int(p["keys"].shape[0])
        rep = parallel.replicate
        if role == "train":
            x, t = jnp.asarray(self.ds.x_train), jnp.asarray(self.ds.y_train)
        else:
            x = jnp.asarray(self.x_transfer)
            t = None if self.y_transfer is None or self.cfg.distill.hard_weight == 0 else (
                jnp.asarray(self.y_transfer))
        x, t, teachers = rep(x, self.mesh), rep(t, self.mesh), rep(teachers, self.mesh)
        x_val, y_val = self._val()
        t0 = time.perf_counter()
        g = generation_of(role)
        label = "train" if g == 0 else "distill" if g == 1 else f"distill g{g}"
        if start:
            self.rep.line(f"{label}: resuming after epoch {start} of {cfg.epochs}")
        bar = self.rep.bar(cfg.epochs, label, initial=start)
        try:
            for e in range(start, cfg.epochs):
                te = time.perf_counter()
                if role == "train":
                    keys, order = ff.epoch_keys(learn_key, e, n, cfg)
                    keys, order = parallel.shard((keys, order), self.mesh)
                    p["state"], m = parallel.population_epoch(
                        p["state"], x, t, keys, order, cfg=cfg, bench=ff.BENCH, mesh=self.mesh,
                        chunk=self.cfg.run.chunk)
                else:
                    k = jax.random.fold_in(learn_key, e)
                    skeys = parallel.shard(jax.random.split(jax.random.fold_in(k, 1), n),
                                           self.mesh)
                    program = _distill_program(cfg, distill_config(self.cfg), self.mesh,
                                               t is not None, self.cfg.run.chunk)
                    labels = t if t is not None else jnp.zeros((), jnp.int32)
                    p["state"], m = program(p["state"], teachers, x, labels,
                                            rep(k, self.mesh), skeys)
                metrics = parallel.to_host(m)
                last = e + 1 == cfg.epochs
                if (e + 1) % self.cfg.data.eval_every == 0 or last:
                    r = _eval(p["state"], x_val, y_val, jax.random.fold_in(eval_key, e), cfg,
                              self.mesh, self.cfg.run.chunk)
                    metrics["val_goodness_error"] = r["goodness_error"]
                    metrics["val_softmax_error"] = r["softmax_error"]
                    resume.last_val = r["goodness_error"]
                    if teacher_val is not None:
                        metrics["val_agreement"] = np.mean(r["goodness_pred"] == teacher_val,
                                                           axis=-1)
                ck = None
                if (e + 1) % self.cfg.run.checkpoint_every == 0 or last:
                    ck = _checkpoint_leaves(parallel.to_host(p["state"]))
                step = int(parallel.to_host(p["state"].step)[0])
                writer.append_epoch(role, e + 1, step, resume.wall + time.perf_counter() - t0,
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

    def _final(self, writer: Any, role: str, teacher_scores: np.ndarray | None) -> None:
        p = self.populations[role]
        key = jax.random.fold_in(self.root, _stream(role, 30))
        r = _eval(p["state"], self.ds.x_test, self.ds.y_test, key, p["cfg"], self.mesh,
                  self.cfg.run.chunk)
        out = {"test_goodness_error": r["goodness_error"],
               "test_softmax_error": r["softmax_error"]}
        if teacher_scores is not None:
            n = int(p["keys"].shape[0])
            s = population_scores(p["state"], self.ds.x_test, jax.random.split(key, n),
                                  p["cfg"], 500, self.mesh)
            temp = self.cfg.distill.temperature
            fid = [distill.fidelity(_softmax(teacher_scores / temp), _softmax(si / temp),
                                    self.ds.y_test, self.ds.n_classes) for si in s]
            out["test_agreement"] = np.array([f["agreement"] for f in fid])
            out["test_kl"] = np.array([f["kl"] for f in fid])
            if self.cfg.distill.bias_correction:
                out.update(self._corrected(p, s, key))
        writer.write_final(role, out)

    def _corrected(self, p: dict[str, Any], test_scores: np.ndarray, key: jax.Array
                   ) -> dict[str, np.ndarray]:
        """Test results of every student after the per-class offsets fitted on the first
        ``bias_images`` labelled validation images (goodness scores divided by T)."""
        d = self.cfg.distill
        x_val, y_val = self.ds.x_val[: d.bias_images], self.ds.y_val[: d.bias_images]
        n = int(test_scores.shape[0])
        val_scores = population_scores(p["state"], x_val, jax.random.split(
            jax.random.fold_in(key, 1), n), p["cfg"], 500, self.mesh)
        y = self.ds.y_test
        left_out = np.isin(y, np.asarray(d.leave_out))
        err, before, after = [], [], []
        for sv, st in zip(val_scores, test_scores, strict=True):
            plain = st.argmax(-1)
            fixed = distill.corrected_predictions(st, sv, y_val, temperature=d.temperature)
            err.append(np.mean(fixed != y))
            before.append(np.mean(plain[left_out] == y[left_out]) if left_out.any() else np.nan)
            after.append(np.mean(fixed[left_out] == y[left_out]) if left_out.any() else np.nan)
        out = {"test_corrected_error": np.array(err)}
        if d.transfer == "without":
            out["test_left_out_accuracy"] = np.array(before)
            out["test_left_out_accuracy_corrected"] = np.array(after)
        return out

    def _best(self, role: str, which: str = "best") -> tuple[ff.FFState, str, int]:
        """Device ``which`` (an index, or ``best``: lowest validation error) of a population of
        this run, as a one-member population."""
        if which == "best":
            val = self.resume[role].last_val
            if val is None:
                raise JobError(f"no validation error recorded for population {role!r}")
            idx = int(np.argmin(val))
        else:
            idx = int(which)  # in range: checked when the job was built
        pop = parallel.to_host(self.populations[role]["state"])
        return jax.tree.map(lambda a: jnp.asarray(a[idx: idx + 1]), pop), f"{role}/{idx}", idx

    def _teacher(self, g: int) -> tuple[ff.FFState, str, int]:
        """Generation g's teacher: the trained population's device (or a finished run file's)
        for g = 1, the best student of generation g − 1 after that."""
        d = self.cfg.distill
        if g > 1:
            return self._best(generation_role(g - 1))
        if "train" in self.cfg.run.phases:
            return self._best("train", d.teacher)
        if self.teacher is None:  # processes other than 0 of a new run read it here
            self.teacher = read_teacher(teacher_path(d.teacher_run), d.teacher, self.cfg)
        return self.teacher.state, self.teacher.name, self.teacher.index

    def _distill(self, writer: Any) -> None:
        for g in range(1, self.cfg.distill.generations + 1):
            self._generation(writer, g)

    def _generation(self, writer: Any, g: int) -> None:
        role = generation_role(g)
        if self.resume[role].final_done:
            return
        teacher, name, _ = self._teacher(g)
        tcfg = self.populations[role]["cfg"]
        x_val, y_val = self._val()
        teacher_val = _eval(teacher, x_val, y_val, jax.random.fold_in(self.root, 40 + g),
                            tcfg)["goodness_pred"]
        if not any(r["generation"] == g for r in self.lineage_rows):
            dcfg = distill_config(self.cfg)
            spec = self.populations[role]["spec"]
            rows = [distill.lineage_record(g, name, f"{role}/{i}", self.transfer_text, dcfg,
                                           self.cfg.run.seed, spec.name, self.cfg.distill.epochs)
                    for i in range(self.cfg.distill.students)]
            self.lineage_rows += rows
            writer.add_lineage(rows)
        self._phase(writer, role, teachers=teacher, teacher_val=teacher_val[0])
        t_scores = population_scores(teacher, self.ds.x_test, jax.random.split(
            jax.random.fold_in(self.root, 140 + g), 1), tcfg, 500)[0]
        self._final(writer, role, t_scores)

    def _val(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.ds.x_val, self.ds.y_val
        if self.cfg.data.eval_limit:
            return x[: self.cfg.data.eval_limit], y[: self.cfg.data.eval_limit]
        return x, y


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


@dataclass(frozen=True)
class Teacher:
    """A trained device of a run file, read as a one-member learner population."""

    state: ff.FFState
    name: str  # as the lineage names it: PATH:train/i
    path: Path
    index: int
    epoch: int  # of the checkpoint it was read from
    fingerprint: str  # teacher_fingerprint of that device at that checkpoint


def teacher_fingerprint(index: int, epoch: int, info: dict[str, Any],
                        leaves: dict[str, np.ndarray]) -> str:
    """What identifies a teacher exactly: a SHA-256 of its index, its checkpoint's epoch, its
    recipe and fab key (the physics) and that checkpoint's leaves of it (what it learned). A
    distillation records it when it starts and refuses to resume from a teacher that differs."""
    h = hashlib.sha256()
    head = {"device": index, "epoch": epoch, "recipe": info["recipe"],
            "key_impl": info["key_impl"]}
    h.update(json.dumps(head, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(np.asarray(info["fab_keys"])[index]).tobytes())
    for k in sorted(leaves):
        a = np.ascontiguousarray(leaves[k])
        h.update(f"|{k}:{a.dtype.str}:{a.shape}|".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def teacher_path(teacher_run: str, run_path: str | os.PathLike[str] | None = None) -> Path:
    """The teacher run file named by ``distill.teacher_run``. Resuming (``run_path``: the
    students' run file) a run that recorded a relative path (written before teacher paths were
    stored absolute): from the working folder, else from the folder of ``run_path``."""
    if not teacher_run:
        raise JobError("this run has no train phase and names no teacher: add --set "
                       "distill.teacher_run=RUN.h5 (a trained run file), or keep the train "
                       "phase in run.phases")
    p = Path(teacher_run)
    if p.exists():
        return p
    if run_path is None:
        raise JobError(f"teacher run {p} does not exist; name a trained run file")
    beside = Path(run_path).parent / p
    if not p.is_absolute() and beside.exists():
        return beside
    where = "" if p.is_absolute() else f" (neither from here nor beside {run_path})"
    raise JobError(f"teacher run {p}, which {run_path} distils from, does not exist{where}; "
                   "put it back to resume, or start a new distillation")


def read_teacher(path: str | os.PathLike[str], which: str, cfg: RunConfig) -> Teacher:
    """Device ``which`` (an index, or ``best``: lowest error at the last validation) of the
    trained population of run file ``path``."""
    path = Path(path)
    info = runs.population_info(path, "train")
    done = info["epochs_done"]
    if done == 0:
        raise JobError(f"teacher run {path} holds no trained epoch to distil from")
    if which == "best":
        val = runs.metrics(path, "train")["val_goodness_error"]
        finite = [r for r in val if np.isfinite(r).all()]
        if not finite:
            raise JobError(f"teacher run {path} has no validation measurement to pick the best "
                           f"device from (none of its {done} epochs was validated); name the "
                           f"teacher with --device N (distill.teacher), N in "
                           f"0..{info['size'] - 1}")
        idx = int(np.argmin(finite[-1]))
    else:
        idx = int(which)
    if not 0 <= idx < info["size"]:
        raise JobError(f"teacher device {idx} is out of range: {path} has devices "
                       f"0..{info['size'] - 1}")
    tcfg = load_config(text=runs.config_text(path))
    spec = devices.DeviceSpec.from_dict(info["recipe"])
    if spec.widths != cfg.device.widths:
        advice = teacher_data_advice(cfg, tcfg)
        raise JobError(f"the teacher's widths {list(spec.widths)} differ from device.widths "
                       f"{list(cfg.device.widths)}; students must read the same inputs"
                       + (f": {advice} (and no --set device.widths: distill takes the "
                          "teacher's)" if advice else ""))
    key = jax.random.wrap_key_data(np.asarray(info["fab_keys"][idx: idx + 1]),
                                   impl=info["key_impl"])
    population = jax.vmap(devices.fabricate, in_axes=(None, 0))(spec, key)
    ds_steps = 1  # the schedule's length does not matter for a teacher that is only measured
    template = ff.init_population(population, tcfg.train, ds_steps)
    epoch, leaves = runs.checkpoint(path, "train")
    leaves = {k: v[idx: idx + 1] for k, v in leaves.items()}
    return Teacher(state=restore(template, leaves), name=f"{path}:train/{idx}", path=path,
                   index=idx, epoch=epoch,
                   fingerprint=teacher_fingerprint(idx, epoch, info, leaves))


def unfinished_teacher_warning(t: Teacher) -> str | None:
    """A warning line when ``t`` comes from a run that has not finished (killed, or still being
    written): distilling from it is allowed (a teacher part-way through its schedule is a
    legitimate experiment), but it is the newest checkpoint, not the planned result."""
    status = runs.status(t.path)
    if status == "complete":
        return None
    planned = runs.population_info(t.path, "train")["planned_epochs"]
    what = "killed, or still being written" if status == "running" else status
    return (f"mortal: warning: teacher run {t.path} is unfinished ({what}): device {t.index} "
            f"is taken from its epoch-{t.epoch} checkpoint, of {planned} planned epochs")


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


def _shared_settings(cfg: RunConfig, resume: bool) -> str:
    """What every process of a distributed run must agree on: the config (less the paths of the
    data and of a teacher run, which may differ between hosts) and whether it resumes."""
    same = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=""),
                               distill=dataclasses.replace(cfg.distill, teacher_run=""))
    return f"{to_toml(same)}\nresume = {resume}"


def run_job(cfg: RunConfig, path: str | os.PathLike[str], *, command_line: str,
            reporter: Reporter, force: bool = False, resume: bool = False,
            mesh: Any = None, on_start: Callable[[], None] | None = None) -> Job:
    """Create (or resume) the run file at ``path`` and execute the plan. In a multi-process run
    every process computes and only process 0 writes. ``on_start``: called once the data, the
    recipes and the run file have passed their checks, just before the first epoch (the CLI
    announces the run there, so that a refused run prints only its error)."""
    if not parallel.same_on_every_process(_shared_settings(cfg, resume)):
        raise JobError("the processes of this distributed run were given different settings "
                       "(config, --set, --seed or --resume); start every process with the same "
                       "command, only --process-id (or the cluster's own id) differing")
    job = Job(cfg, reporter, mesh)
    if resume:
        written = runs.attributes(path).get("host", {}).get("xla_flags")
        now = xla_flags()
        if (written is not None and numerics_flags(written) != numerics_flags(now)
                and parallel.is_writer()):
            print(f"mortal: warning: {path} was written with XLA_FLAGS={written!r}, this process "
                  f"has {now!r}; the resumed epochs may differ in the last bits from an "
                  "uninterrupted run (set XLA_FLAGS as it was to resume bit for bit)",
                  file=sys.stderr)
        job.load_resume(path)
        job.check_teacher(resumed=path)  # before the run is announced
    if jax.process_count() > 1:  # everyone has read the file before process 0 replaces it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("mortal: run file read")
    if not parallel.is_writer():
        writer: Any = NullWriter()
    elif resume:
        writer = RunWriter.resume(path)
    else:
        job.check_teacher()
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # only for a run accepted
        writer = RunWriter.create(path, attributes=job.attributes(command_line),
                                  populations=job.plans(), force=force)
    with writer:
        if on_start is not None:
            on_start()
        job.execute(writer)
    return job
