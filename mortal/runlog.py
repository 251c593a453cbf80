"""Writing run files (HDF5): append-only, flushed every epoch, safe against a kill at any instant.

How a run file survives a crash (schema in ``docs/log-format.md``):

* The skeleton (attributes, every dataset) is written to ``RUN.h5.part`` and renamed into place,
  so a run killed while starting leaves no file that looks like a run.
* The writer then appends in HDF5's single-writer / multiple-reader (SWMR) mode: HDF5 orders its
  metadata writes so that the file is consistent at every instant, for live readers and after a
  kill (``mortal show`` reads a live file).
* An epoch is committed by appending its number to ``populations/<name>/epochs`` *after* its
  metrics and its checkpoint are flushed; readers take that length as the number of completed
  epochs. Checkpoints alternate between two slots, so a torn one never replaces the last good one.
* ``resume`` copies the committed part up to the newest checkpoint into a fresh file (dropping
  anything after it) and renames it over the old one, then appends again.
* One writer at a time: the writer holds an exclusive lock on ``RUN.h5.lock`` (``flock``; the
  kernel releases it when the process dies, however it dies).

A full disk or any other write failure raises ``RunWriteError`` with a one-line reason. While
appending, the file keeps its completed epochs and can be resumed; while creating or resuming,
the ``.part`` file is deleted, so a new run leaves no file and a resumed one is left as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mortal.runs import FORMAT, SCHEMA_VERSION, RunFileError, leaf_name

_STATUS_DTYPE = "S200"
_LINEAGE_DTYPE = "S2000"


class RunLockedError(RuntimeError):
    """Another process is writing this run file."""


class RunWriteError(RuntimeError):
    """Writing the run file failed (full disk, I/O error); its message is one line. Appending:
    completed epochs are kept. Creating or resuming: no ``.part`` file is left, and the file is
    as it was. After a failed HDF5 write the process should exit without closing HDF5 files
    (``os._exit``, as the command line does): HDF5 would try the write again."""


@dataclass(frozen=True)
class PopulationPlan:
    """What a run file must hold for one population, known when the run starts.

    ``role``: ``train`` or ``students``; ``recipe``: ``DeviceSpec.to_dict()``; ``fab_keys``:
    ``(P, 2)`` uint32 key data of each device's fab key (``key_impl`` names the PRNG);
    ``planned_epochs``; ``metrics``: names of the per-epoch ``(P,)`` metrics; ``final``: names of
    the end-of-phase ``(P,)`` results; ``checkpoint``: leaf name → example array ``(P, ...)``.
    """

    role: str
    recipe: Mapping[str, Any]
    fab_keys: np.ndarray
    key_impl: str
    planned_epochs: int
    metrics: tuple[str, ...]
    final: tuple[str, ...]
    checkpoint: Mapping[str, np.ndarray]

    @property
    def size(self) -> int:
        return int(self.fab_keys.shape[0])


def flatten_tree(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    """A pytree's leaves as ``{dotted key path: numpy array}`` (checkpoint dataset names)."""
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {leaf_name((prefix,), p): np.asarray(v) for p, v in flat}


def stored_device_state(state: Any) -> Any:
    """A learner state (any dataclass with a ``device``) with its device state in the layout
    files store (``devices.StoredState``: separate float32 conductances and read offsets), so
    that leaf names stay ``...device.state.weights.0`` and ``...offsets.0``."""
    import dataclasses

    return dataclasses.replace(state, device=dataclasses.replace(
        state.device, state=state.device.state.unpacked()))


def live_device_state(state: Any) -> Any:
    """The inverse of ``stored_device_state``: the device state packed for computing."""
    import dataclasses

    return dataclasses.replace(state, device=dataclasses.replace(
        state.device, state=state.device.state.packed()))


def unflatten_tree(prefix: str, template: Any, leaves: Mapping[str, np.ndarray]) -> Any:
    """The pytree ``template`` with its leaves replaced by ``leaves`` (from ``flatten_tree``)."""
    import jax
    import jax.numpy as jnp

    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for p, v in flat:
        name = leaf_name((prefix,), p)
        if name not in leaves:
            raise RunFileError(f"checkpoint lacks {name!r}: the run file was written by an "
                               "incompatible learner")
        a = leaves[name]
        if a.shape != np.shape(v) or a.dtype != np.asarray(v).dtype:
            raise RunFileError(f"checkpoint leaf {name!r} has shape {a.shape} {a.dtype}, the "
                               f"learner expects {np.shape(v)} {np.asarray(v).dtype}")
        out.append(jnp.asarray(a))
    return jax.tree.unflatten(treedef, out)


# ---------------------------------------------------------------------------------------------
# the single-writer lock
# ---------------------------------------------------------------------------------------------


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def acquire_lock(path: str | os.PathLike[str]) -> int:
    """Take the writer lock of ``path`` (non-blocking); returns the lock's file descriptor.
    Raises ``RunLockedError`` if another process holds it."""
    lp = _lock_path(Path(path))
    try:
        fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # name the run file the user gave, not its lock
        raise type(exc)(exc.errno, f"{exc.strerror} (cannot create files there)",
                        str(path)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunLockedError(f"{path} is being written by another process (pid {holder}); "
                             "wait for it to finish, or write to another file") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
    except OSError as exc:  # a full disk: not even the few bytes of a process id fit
        release_lock(path, fd)
        raise RunWriteError(f"could not lock {path} for writing ({exc.strerror or exc}); "
                            "nothing was written: free space, then run again") from None
    return fd


def release_lock(path: str | os.PathLike[str], fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(_lock_path(Path(path)))
    os.close(fd)


def is_locked(path: str | os.PathLike[str]) -> bool:
    """Whether some process is writing ``path`` now."""
    lp = _lock_path(Path(path))
    if not lp.exists():
        return False
    try:
        fd = os.open(lp, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------


class _HeldStderr:
    def __init__(self) -> None:
        self.text = b""
        self.ok = False

    def release(self) -> None:
        self.ok = True


@contextlib.contextmanager
def _stderr_held_back() -> Any:
    """Hold back what is written to file descriptor 2 (HDF5's and h5py's own reports of a failed
    write, which the one-line error replaces); pass it on if ``release`` was called."""
    import tempfile

    held = _HeldStderr()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if held.ok:
                tmp.seek(0)
                text = tmp.read()
                if text:
                    os.write(2, text)


def _write_failure_reason(exc: BaseException) -> str:
    """The one-line reason of a failed HDF5 write: the failed system call's message where HDF5
    reports one (``'No space left on device'``), else the first line of the error."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and "error message = '" not in text:
        return exc.strerror
    if "error message = '" in text:  # HDF5's report of the failed system call
        return text.split("error message = '", 1)[1].split("'")[0]
    return text.splitlines()[0][:120]


@contextlib.contextmanager
def _hdf5_writes() -> Any:
    """Run HDF5 writes with HDF5's own reports held back (the one-line error replaces them);
    a failed write that HDF5 reports only while releasing an object (h5py can only print
    those, through ``sys.unraisablehook``) is raised here like any other."""
    released: list[BaseException] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: released.append(u.exc_value or RuntimeError(u.err_msg))
    try:
        with _stderr_held_back() as held:
            yield
            if released:
                raise released[0]
            held.release()  # all went well: let through what was printed
    finally:
        sys.unraisablehook = previous


def _open_for_appending(path: Path) -> h5py.File:
    f = h5py.File(path, "r+", libver="latest", locking=False)
    f.swmr_mode = True
    return f


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _extendable(g: h5py.Group, name: str, dtype: Any, row: tuple[int, ...] = ()) -> None:
    chunk_rows = max(1, min(256, 65536 // max(1, int(np.prod(row, dtype=np.int64)))))
    g.create_dataset(name, shape=(0, *row), maxshape=(None, *row), dtype=dtype,
                     chunks=(chunk_rows, *row))


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class RunWriter:
    """Appends epochs to a run file. Create with ``create`` or ``resume``; use as a context
    manager (``finish`` marks the run complete; leaving by an exception leaves it resumable)."""

    def __init__(self, path: Path, lock_fd: int, file: h5py.File | None = None) -> None:
        """Append to ``path`` (whose lock ``lock_fd`` the caller holds); ``file``: ``path``
        already open for appending in SWMR mode (``create`` and ``resume`` open it as
        ``.part``, before renaming it into place)."""
        self.path = path
        self._lock = lock_fd
        self._broken = False
        self._f = file if file is not None else _open_for_appending(path)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, attributes: Mapping[str, Any],
               populations: Mapping[str, PopulationPlan], force: bool = False) -> RunWriter:
        """A new run file with every dataset in place (written as ``.part``, then renamed).

        ``attributes``: root attributes (strings, numbers; dicts are stored as JSON).
        Raises ``FileExistsError`` if ``path`` exists and not ``force``; ``RunLockedError`` if
        another process writes it; ``RunWriteError`` if it cannot be written (a full disk):
        then no ``.part`` file is left and an existing ``path`` is as it was.
        """
        p = Path(path)
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists; choose another path, pass --force to "
                                  "overwrite it, or --resume it")
        fd = acquire_lock(p)
        part = p.with_name(p.name + ".part")
        try:
            # built in memory and written with plain file I/O: HDF5 never sees a failed write
            # (after one, HDF5 2.x can crash when the file is closed)
            image = _skeleton(attributes, populations)
            f = _install(part, p, lambda: _write_bytes(part, image))
        except RunWriteError as exc:
            release_lock(p, fd)
            old = f"; {p} is unchanged" if p.exists() else ""
            raise RunWriteError(f"could not create {p} ({exc}); nothing was written{old}: free "
                                "space or choose another folder, then run again") from None
        except BaseException:
            release_lock(p, fd)
            raise
        return cls(p, fd, f)

    @classmethod
    def resume(cls, path: str | os.PathLike[str]) -> RunWriter:
        """Continue a run file: its committed epochs are kept, anything after them dropped.

        The committed part is copied into ``.part``, which replaces the file when complete.
        The copy needs about the file's size: without that much room (free space, or the
        process's file-size limit) ``RunWriteError`` is raised before anything is written;
        if the copy fails all the same, ``.part`` is deleted and the file is left as it was.
        """
        from mortal.runs import open_run

        p = Path(path)
        fd = acquire_lock(p)
        part = p.with_name(p.name + ".part")
        try:
            with open_run(p) as src:  # a file that is not a run fails here, as itself

                def copy() -> None:
                    dst = h5py.File(part, "w", libver="latest", locking=False)
                    _copy_committed(src, dst)
                    dst.close()  # not reached after a failed write: see _install

                try:
                    # refuse before writing: a failed HDF5 write cannot be cleaned up in-process
                    _check_room(p, p.stat().st_size + _ROOM_MARGIN)
                    f = _install(part, p, copy)
                except RunWriteError as exc:
                    raise RunWriteError(f"could not resume {p} ({exc}): resuming first writes "
                                        f"a copy of the file; {p} is unchanged: free space, "
                                        "then resume again") from None
        except BaseException:
            release_lock(p, fd)
            raise
        return cls(p, fd, f)

    # -- appending ---------------------------------------------------------------------------

    def _guard(self, what: str, fn: Any) -> Any:
        """Run ``fn`` (HDF5 writes); turn any failure into ``RunWriteError``. HDF5 also reports
        failed writes while releasing objects (h5py can only print those), so they are caught
        through ``sys.unraisablehook`` for the duration of the call."""
        if self._broken:
            raise RunWriteError(f"{self.path}: an earlier write failed; resume the run")
        try:
            with _hdf5_writes():
                return fn()
        except (OSError, RuntimeError, ValueError) as exc:
            self._broken = True
            # keep the failed call's HDF5 objects alive: releasing them makes HDF5 write again
            self._failure = exc
            raise RunWriteError(f"could not write {what} to {self.path} "
                                f"({_write_failure_reason(exc)}); the file keeps its completed "
                                f"epochs: free space, then resume with --resume {self.path}"
                                ) from None

    def epochs_done(self, name: str) -> int:
        return int(self._f["populations"][name]["epochs"].shape[0])

    def write_checkpoint(self, name: str, epoch: int, leaves: Mapping[str, np.ndarray]) -> None:
        """Write a checkpoint for ``epoch`` into the slot not holding the newest one."""

        def do() -> None:
            g = self._f["populations"][name]["checkpoint"]
            epochs = g["epoch"][()]
            slot = int(np.argmin(epochs))  # the older (or empty) slot
            target = g[f"slot{slot}"]
            for k, v in leaves.items():
                target[k][...] = v
            self._f.flush()
            g["epoch"][slot] = epoch
            self._f.flush()

        self._guard(f"the epoch-{epoch} checkpoint of {name!r}", do)

    def append_epoch(self, name: str, epoch: int, step: int, wall_time: float,
                     metrics: Mapping[str, np.ndarray],
                     checkpoint: Mapping[str, np.ndarray] | None = None) -> None:
        """Commit one epoch: metric rows ``(P,)`` (missing ones NaN), then the optional
        checkpoint, then the epoch number (the commit record); flushed at each stage."""

        def rows() -> None:
            g = self._f["populations"][name]
            n = g["epochs"].shape[0]
            for ds, value in ((g["steps"], step), (g["wall_time"], wall_time)):
                ds.resize(n + 1, axis=0)
                ds[n] = value
            for k, ds in g["metrics"].items():
                ds.resize(n + 1, axis=0)
                ds[n] = np.asarray(metrics[k], np.float32) if k in metrics else np.nan
            self._f.flush()

        self._guard(f"epoch {epoch} of {name!r}", rows)
        if checkpoint is not None:
            self.write_checkpoint(name, epoch, checkpoint)

        def commit() -> None:
            g = self._f["populations"][name]["epochs"]
            n = g.shape[0]
            g.resize(n + 1, axis=0)
            g[n] = epoch
            self._f.flush()

        self._guard(f"epoch {epoch} of {name!r}", commit)

    def write_final(self, name: str, results: Mapping[str, np.ndarray]) -> None:
        def do() -> None:
            g = self._f["populations"][name]["final"]
            for k, v in results.items():
                g[k][...] = np.asarray(v, np.float32)
            self._f.flush()

        self._guard(f"final results of {name!r}", do)

    def add_lineage(self, rows: list[dict[str, Any]]) -> None:
        def do() -> None:
            ds = self._f["lineage"]
            n = ds.shape[0]
            ds.resize(n + len(rows), axis=0)
            for i, r in enumerate(rows):
                text = json.dumps(r)
                if len(text) > 2000:
                    raise ValueError("lineage record longer than 2000 bytes")
                ds[n + i] = np.bytes_(text)
            self._f.flush()

        self._guard("the lineage", do)

    def set_status(self, text: str) -> None:
        def do() -> None:
            self._f["status"][()] = np.bytes_(text[:200])
            self._f.flush()

        self._guard("the status", do)

    def finish(self) -> None:
        """Mark the run complete."""
        self.set_status("complete")

    def close(self) -> None:
        if self._f is not None and not self._broken:
            self._f.close()
            self._f = None  # type: ignore[assignment]
        # after a failed write the file is left open: closing it would make HDF5 write again
        # into a file it can no longer extend. The command line exits at once (os._exit), which
        # leaves the file as it was at the last successful flush.
        if self._lock is not None:
            release_lock(self.path, self._lock)
            self._lock = None  # type: ignore[assignment]

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# what a failed write left in HDF5's hands: never released, since releasing makes HDF5 write
# again into a file that cannot grow (HDF5 2.x can crash then); the command line exits at once
_ABANDONED: list[BaseException] = []

# the room a resumed copy may need beyond the size of the file it copies
_ROOM_MARGIN = 16 * 1024


def _install(part: Path, path: Path, write: Any) -> h5py.File:
    """Write ``part`` with ``write()`` (which leaves it closed), open it for appending, then
    rename it to ``path``: ``path`` only ever names a complete file (the old one, or the new one
    ready to append to). Returns the open file. If a write fails (a full disk), ``part`` is
    deleted, ``path`` is not touched, and ``RunWriteError`` is raised with the reason alone."""
    try:
        with _hdf5_writes():
            write()
            f = _open_for_appending(part)
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, RunFileError):  # the source is not a run: no write failed
            raise
        _ABANDONED.append(exc)  # its traceback holds the failed call's HDF5 objects
        _unlink_quietly(part)
        raise RunWriteError(_write_failure_reason(exc)) from None
    except BaseException:  # Ctrl-C: leave nothing that looks like a run
        _unlink_quietly(part)
        raise
    try:
        os.replace(part, path)
    except OSError as exc:
        f.close()
        _unlink_quietly(part)
        raise RunWriteError(_write_failure_reason(exc)) from None
    return f


def _skeleton(attributes: Mapping[str, Any], populations: Mapping[str, PopulationPlan]) -> bytes:
    """The bytes of a new run file: attributes and every dataset, no epoch yet."""
    import io

    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver="latest") as f:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["created"] = _now()
        for k, v in attributes.items():
            f.attrs[k] = json.dumps(v) if isinstance(v, dict | list) else v
        f.create_dataset("status", data=np.bytes_("running"), dtype=_STATUS_DTYPE)
        _extendable(f, "lineage", _LINEAGE_DTYPE)
        pops = f.create_group("populations")
        for name, plan in populations.items():
            _create_population(pops.create_group(name), plan)
    return buffer.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


def _check_room(path: Path, needed: int) -> None:
    """Raise ``RunWriteError`` unless a file of ``needed`` bytes fits beside ``path``: free
    space on its file system (as an unprivileged user sees it) and the process's file-size
    limit (``ulimit -f``)."""
    import resource

    st = os.statvfs(path.parent)
    free = st.f_bavail * st.f_frsize
    if st.f_blocks and free < needed:  # (a file system that reports no size is not judged)
        raise RunWriteError(f"need about {_size(needed)}, {_size(free)} free in {path.parent}")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < needed:
        raise RunWriteError(f"need about {_size(needed)}, files are limited to "
                            f"{_size(limit)} (ulimit -f)")


def _copy_committed(src: h5py.File, dst: h5py.File) -> None:
    """Copy a run file up to its newest committed checkpoint (what ``resume`` continues)."""
    for k, v in src.attrs.items():
        dst.attrs[k] = v
    for k in src:
        src.copy(src[k], dst, k)
    for g in dst["populations"].values():
        committed = int(g["epochs"].shape[0])
        ck = g["checkpoint"]["epoch"]
        ck[...] = np.where(ck[()] > committed, -1, ck[()])
        # continue from the newest checkpoint: epochs after it are recomputed
        n = int(max(0, ck[()].max()))
        for ds in (g["epochs"], g["steps"], g["wall_time"], *g["metrics"].values()):
            ds.resize(n, axis=0)
    dst["status"][()] = np.bytes_("running")


def _create_population(g: h5py.Group, plan: PopulationPlan) -> None:
    p = plan.size
    g.attrs["role"] = plan.role
    g.attrs["size"] = p
    g.attrs["recipe"] = json.dumps(dict(plan.recipe))
    g.attrs["key_impl"] = plan.key_impl
    g.attrs["planned_epochs"] = plan.planned_epochs
    g.create_dataset("fab_keys", data=np.asarray(plan.fab_keys, np.uint32))
    _extendable(g, "epochs", np.int64)
    _extendable(g, "steps", np.int64)
    _extendable(g, "wall_time", np.float64)
    m = g.create_group("metrics")
    for k in plan.metrics:
        _extendable(m, k, np.float32, (p,))
    fin = g.create_group("final")
    for k in plan.final:
        fin.create_dataset(k, data=np.full((p,), np.nan, np.float32))
    ck = g.create_group("checkpoint")
    ck.create_dataset("epoch", data=np.array([-1, -1], np.int64))
    for s in (0, 1):
        slot = ck.create_group(f"slot{s}")
        for k, v in plan.checkpoint.items():
            slot.create_dataset(k, shape=v.shape, dtype=v.dtype)
