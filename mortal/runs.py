"""Reading run files (HDF5): plain dicts and numpy arrays, no objects of the writing code.

Schema: ``docs/log-format.md``. Every reader opens the file in HDF5's single-writer /
multiple-reader (SWMR) read mode, so a file that is being written, or whose writer was killed,
reads as its last completed epoch. Only ``load_device`` needs the ``devices`` package (to rebuild
an instance from its recipe and fab key).

    info = runs.summary("runs/demo.h5")            # dict: attributes, status, populations
    m = runs.metrics("runs/demo.h5", "train")      # dict of arrays: epoch, wall_time, (E, P)...
    dev = runs.load_device("runs/demo.h5", 3)      # the identical device 3, as fabricated
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT = "mortal-run"
SCHEMA_VERSION = 1


class RunFileError(ValueError):
    """The file is missing, not a run file, from a newer schema, or lacks what was asked."""


class RunFileCutShortError(RunFileError):
    """The file ends before data it refers to: a copy cut short (never a reason to start over)."""


@contextmanager
def open_run(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open a run file for reading (SWMR: works on live and killed runs); checks format and
    schema version."""
    p = Path(path)
    if p.is_dir():
        raise RunFileError(f"{p} is a directory, not a run file")
    if not p.is_file():
        raise RunFileError(f"{p} does not exist")
    _check_not_truncated(p)
    try:
        fid = h5py.h5f.open(os.fsencode(p), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ,
                            fapl=_reader_access())
    except (OSError, RuntimeError) as exc:  # RuntimeError: h5py on a damaged superblock
        if _bad_checksum(exc):
            raise _cut_short(p) from None
        raise RunFileError(f"{p} is not an HDF5 run file ({_short(exc)})") from None
    f = h5py.File(fid)
    try:
        if _root_attribute(f, "format") != FORMAT:
            raise RunFileError(f"{p} is an HDF5 file but not a mortal run file (no "
                               f"format='{FORMAT}' attribute)")
        version = int(_root_attribute(f, "schema_version", -1))
        if version > SCHEMA_VERSION:
            raise RunFileError(f"{p} has run-file schema {version}, newer than this mortal "
                               f"reads ({SCHEMA_VERSION}); upgrade mortal")
        if version < 1:
            raise RunFileError(f"{p} has no valid schema_version attribute")
        yield f
    except (OSError, RuntimeError, KeyError) as exc:
        if _bad_checksum(exc):
            raise _cut_short(p) from None
        raise
    finally:
        f.close()


def _root_attribute(f: h5py.File, name: str, default: Any = None) -> Any:
    """An attribute of the file's root; ``default`` if it has none (``attrs.get`` would also
    answer ``default`` for an attribute it cannot read, which ``open_run`` must refuse)."""
    try:
        return f.attrs[name]
    except KeyError as exc:
        if _bad_checksum(exc):
            raise
        return default


# HDF5's SWMR reader rereads a metadata block whose checksum fails (a live writer may be
# rewriting it), waiting twice as long before each new attempt. Its default of 100 attempts never
# ends in practice on a block that stays bad (a copy cut inside its metadata); 30 attempts wait
# about a second in all, far longer than a writer takes to flush one block.
READ_ATTEMPTS = 30


def _reader_access() -> h5py.h5p.PropFAID:
    """File-access properties of every reader: the newest format, no file locks (a live writer
    holds the file) and a bounded number of metadata read attempts."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fapl.set_file_locking(False, True)
    set_attempts = _set_metadata_read_attempts()
    if set_attempts is not None:
        set_attempts(fapl.id, READ_ATTEMPTS)
    return fapl


@functools.cache
def _set_metadata_read_attempts() -> Any:
    """``H5Pset_metadata_read_attempts`` of the HDF5 library that h5py itself loaded (h5py does
    not wrap it; property lists are only valid inside the library instance that made them), or
    None where that library cannot be found: readers then keep HDF5's defaults."""
    lib = _load_h5py_hdf5()
    if lib is None:
        return None
    fn = lib.H5Pset_metadata_read_attempts
    fn.argtypes, fn.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
    return fn


def _load_h5py_hdf5() -> ctypes.CDLL | None:
    mapped: set[str] = set()
    try:  # Linux: the libraries mapped into this process (h5py is imported, so its one is)
        with open("/proc/self/maps") as maps:
            mapped = {ln.split()[-1] for ln in maps if "/libhdf5" in ln}
    except OSError:
        pass
    here = Path(h5py.__file__).parent  # macOS and Windows wheels keep the library beside h5py
    beside = {str(c) for pattern in (".dylibs/libhdf5*.dylib", "hdf5*.dll")
              for c in here.glob(pattern)}
    found = sorted(c for c in mapped | beside
                   if "hdf5_hl" not in Path(c).name and Path(c).is_file())
    # h5py's own copy (wheels: h5py.libs/, h5py/.dylibs/); else the only one in the process (a
    # build against a shared HDF5). Another instance would not know h5py's property lists.
    own = [c for c in found if any(part.startswith("h5py") for part in Path(c).parts)]
    for c in own or (found if len(found) == 1 else []):
        try:
            lib = ctypes.CDLL(c)
        except OSError:
            continue
        if hasattr(lib, "H5Pset_metadata_read_attempts"):
            return lib
    return None


def _bad_checksum(exc: BaseException) -> bool:
    return "checksum" in str(exc)


def _cut_short(p: Path) -> RunFileCutShortError:
    return RunFileCutShortError(
        f"{p} is cut short or damaged: HDF5 found a bad checksum in its metadata (a copy of a "
        "run taken while it was written, or cut off?); copy it again in full from its source")


_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_not_truncated(p: Path) -> None:
    """Refuse a cleanly closed file that is shorter than the end-of-file address its HDF5
    superblock records (a copy cut short, a partial download). HDF5 makes this check itself,
    but not in the SWMR read mode that lets readers follow a live writer: there the missing
    bytes read as zeros, or a reader retries a damaged block without end. A file whose writer
    did not close it (killed, or stopped by a full disk: the superblock's consistency flags are
    still set) can be legitimately shorter than its recorded end and still hold every committed
    epoch, so it is left to the SWMR reader. Superblock versions 2 and 3 (what
    ``libver="latest"`` writes) are checked; other files are left to HDF5."""
    with open(p, "rb") as fh:
        head = fh.read(48)
        size = os.fstat(fh.fileno()).st_size
    if head[:8] != _SIGNATURE:
        return
    n = head[9] if len(head) > 9 else 8  # size of file addresses in bytes
    if len(head) < 12 or (head[8] in (2, 3) and len(head) < 16 + 4 * n):
        raise RunFileCutShortError(f"{p} is truncated: its {size} bytes do not hold the HDF5 "
                                   "superblock (an interrupted copy?); copy it again from its "
                                   "source")
    if head[8] not in (2, 3) or head[11] != 0 or n not in (2, 4, 8):
        return
    base, _, stored_eof = (int.from_bytes(head[12 + i * n: 12 + (i + 1) * n], "little")
                           for i in range(3))
    if size < base + stored_eof:
        raise RunFileCutShortError(f"{p} is truncated: it has {size} of its "
                                   f"{base + stored_eof} bytes (an interrupted copy?); copy it "
                                   "again from its source")


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:160]


def _str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _committed(group: h5py.Group) -> int:
    ds = group["epochs"]
    ds.refresh()
    return int(ds.shape[0])


def _read(ds: h5py.Dataset, n: int | None = None) -> np.ndarray:
    ds.refresh()
    _check_stored(ds, n)
    return np.asarray(ds[:n] if n is not None else ds[()])


def _check_stored(ds: h5py.Dataset, rows: int | None) -> None:
    """Refuse to read data whose bytes lie past the end of the file (only the chunks holding the
    first ``rows`` rows, if given). A file whose writer did not close it skips the end-of-file
    check of ``_check_not_truncated``, and in SWMR read mode HDF5 returns zeros for the missing
    bytes without an error: a copy of a live or killed run cut short would otherwise read as
    zero weights or metrics."""
    size = os.path.getsize(ds.file.filename)
    dsid = ds.id
    if ds.chunks is None:
        offset = dsid.get_offset()  # None: no storage yet (fill value), or compact storage
        ends = [] if offset is None else [offset + dsid.get_storage_size()]
    else:
        ends = []
        for i in range(dsid.get_num_chunks()):
            info = dsid.get_chunk_info(i)
            if info.byte_offset is not None and (rows is None or info.chunk_offset[0] < rows):
                ends.append(info.byte_offset + info.size)
    if ends and max(ends) > size:
        raise RunFileCutShortError(
            f"{ds.file.filename} is cut short: {ds.name} lies past the end of its {size} bytes "
            "(a copy of a run taken while it was written, or cut off?); copy it again in full "
            "from its source")


def attributes(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Root attributes as plain Python values (JSON-valued ones decoded)."""
    with open_run(path) as f:
        out: dict[str, Any] = {}
        for k, v in f.attrs.items():
            v = _str(v) if isinstance(v, bytes | str) else v.item() if hasattr(v, "item") else v
            if k in ("library_versions", "host", "seeds") and isinstance(v, str):
                v = json.loads(v)
            out[k] = v
        return out


def status(path: str | os.PathLike[str]) -> str:
    """``running`` (being written, or killed: resume it), ``complete`` or ``failed: ...``."""
    with open_run(path) as f:
        return _status(f)


def _status(f: h5py.File) -> str:
    ds = f["status"]
    ds.refresh()
    _check_stored(ds, None)
    return _str(ds[()]).strip()


def config_text(path: str | os.PathLike[str]) -> str:
    """The resolved configuration, as TOML text."""
    return str(attributes(path)["config"])


def config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The resolved configuration as a dict of sections."""
    return tomllib.loads(config_text(path))


def populations(path: str | os.PathLike[str]) -> list[str]:
    with open_run(path) as f:
        names = list(f["populations"])
    order = {"train": 0, "students": 1}
    return sorted(names, key=lambda n: (order.get(n, 2), n))


def _population(f: h5py.File, name: str) -> h5py.Group:
    if name not in f["populations"]:
        raise RunFileError(f"{f.filename} has no population {name!r}; it has "
                           f"{', '.join(f['populations']) or 'none'}")
    return f["populations"][name]


def population_info(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Size, role, recipe (dict), fab keys ``(P, 2)`` uint32, planned and completed epochs."""
    with open_run(path) as f:
        g = _population(f, name)
        return {"name": name, "role": _str(g.attrs["role"]), "size": int(g.attrs["size"]),
                "recipe": json.loads(_str(g.attrs["recipe"])),
                "recipe_name": json.loads(_str(g.attrs["recipe"])).get("name", ""),
                "planned_epochs": int(g.attrs["planned_epochs"]),
                "epochs_done": _committed(g), "fab_keys": _read(g["fab_keys"]),
                "key_impl": _str(g.attrs["key_impl"])}


def metrics(path: str | os.PathLike[str], name: str) -> dict[str, np.ndarray]:
    """Per-epoch records of a population: ``epoch``, ``step``, ``wall_time`` ``(E,)`` and every
    metric ``(E, P)`` (NaN where not measured), for the E completed epochs."""
    with open_run(path) as f:
        g = _population(f, name)
        n = _committed(g)
        out = {"epoch": _read(g["epochs"], n), "step": _read(g["steps"], n),
               "wall_time": _read(g["wall_time"], n)}
        for k in g["metrics"]:
            out[k] = _read(g["metrics"][k], n)
        return out


def final(path: str | os.PathLike[str], name: str) -> dict[str, np.ndarray]:
    """End-of-phase measurements ``(P,)`` (test error, agreement ...); NaN until the phase ends."""
    with open_run(path) as f:
        g = _population(f, name)
        return {k: _read(g["final"][k]) for k in g["final"]}


def checkpoint(path: str | os.PathLike[str], name: str) -> tuple[int, dict[str, np.ndarray]]:
    """The newest completed checkpoint of a population: (epoch, leaf name → array ``(P, ...)``).
    Epoch 0 is the state before learning."""
    with open_run(path) as f:
        g = _population(f, name)
        epoch, slot = _newest_checkpoint(g)
        return epoch, {k: _read(v) for k, v in g["checkpoint"][f"slot{slot}"].items()}


def _newest_checkpoint(g: h5py.Group) -> tuple[int, int]:
    n = _committed(g)
    epochs = _read(g["checkpoint"]["epoch"])
    usable = [(int(e), s) for s, e in enumerate(epochs) if 0 <= e <= n]
    if not usable:
        raise RunFileError(f"{g.file.filename}: population {g.name.split('/')[-1]!r} has no "
                           "completed checkpoint")
    return max(usable)


def lineage(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Distillation edges: teacher, student, transfer set, generation, temperature, ..."""
    with open_run(path) as f:
        return [json.loads(_str(r)) for r in _read(f["lineage"])]


def summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything ``mortal show`` prints, as plain data."""
    out = {"path": str(path), "attributes": attributes(path), "status": status(path),
           "lineage": lineage(path), "populations": {}}
    for name in populations(path):
        info = population_info(path, name)
        info.pop("fab_keys")
        info["metrics"] = metrics(path, name)
        info["final"] = final(path, name)
        out["populations"][name] = info
    return out


def load_device(path: str | os.PathLike[str], index: int, population: str = "train",
                state: str = "fab") -> Any:
    """Rebuild device ``index`` of a population: ``state="fab"`` gives the instance exactly as
    fabricated (bit-identical), ``"checkpoint"`` the same instance with the synapse state of the
    newest checkpoint."""
    import jax

    import devices

    info = population_info(path, population)
    if not 0 <= index < info["size"]:
        raise RunFileError(f"device index {index} is out of range: population {population!r} "
                           f"of {path} has devices 0..{info['size'] - 1}")
    if state not in ("fab", "checkpoint"):
        raise ValueError(f"state must be 'fab' or 'checkpoint', got {state!r}")
    spec = devices.DeviceSpec.from_dict(info["recipe"])
    key = jax.random.wrap_key_data(np.asarray(info["fab_keys"][index]), impl=info["key_impl"])
    device = devices.fabricate(spec, key)
    if state == "fab":
        return device
    _, leaves = checkpoint(path, population)
    template = device.state.unpacked()  # the layout checkpoints store
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    arrays = [leaves[leaf_name(("device_state",), p)][index] for p, _ in flat]
    import dataclasses

    return dataclasses.replace(device, state=jax.tree.unflatten(
        treedef, [jax.numpy.asarray(a) for a in arrays]).packed())


def leaf_name(prefix: tuple[str, ...], path: tuple[Any, ...]) -> str:
    """The dataset name of a pytree leaf in a checkpoint: its key path joined by dots."""
    parts = list(prefix)
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)
