"""Datasets: the embedded 8×8 digits, and MNIST / Fashion-MNIST from the original IDX files.

Images are float32 in [0, 1], flattened to ``(N, H·W)``; labels are int32 class indices. Splits
follow Hinton's recipe for MNIST-like data: the first 50,000 training images train, the last
10,000 validate, the official 10,000 test images test.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

DATA_ENV = "MORTAL_DATA"
DATASETS = ("digits", "mnist", "fashion-mnist")

# MD5 of the official .gz files (the checksums torchvision and Zalando publish)
_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}
_DIGITS_MD5 = "9b335364a7bfd63947c7480a5bd51f2d"


class DataError(ValueError):
    """A dataset is missing, corrupt or invalid. The message names the file and the fix."""


@dataclass(frozen=True)
class Dataset:
    """A labelled image set with train / validation / test splits (numpy arrays)."""

    name: str
    image_shape: tuple[int, int]
    n_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_inputs(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0]:
                raise DataError(f"{self.name}: {split} has {x.shape[0]} images but "
                                f"{y.shape[0]} labels")
            if x.size and not np.isfinite(x).all():
                raise DataError(f"{self.name}: {split} images contain NaN or Inf")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise DataError(f"{self.name}: {split} labels must lie in "
                                f"[0, {self.n_classes - 1}]")


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def load_digits(n_val: int = 297, n_test: int = 300, seed: int = 0) -> Dataset:
    """The embedded 8×8 digits (1,797 images, pixels 0..16 scaled to [0, 1]).

    A fixed permutation (``seed``) splits them into 1,200 train, 297 validation and 300 test
    images by default. No network, no scikit-learn.
    """
    raw = resources.files("mortal").joinpath("data/digits.csv.gz").read_bytes()
    if _md5(raw) != _DIGITS_MD5:
        raise DataError("the embedded digits.csv.gz is corrupt; reinstall mortal")
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",",
                       dtype=np.float32)
    x, y = table[:, :64] / 16.0, table[:, 64].astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_train = len(y) - n_val - n_test
    return Dataset("digits", (8, 8), 10, x[:n_train], y[:n_train],
                   x[n_train:n_train + n_val], y[n_train:n_train + n_val],
                   x[n_train + n_val:], y[n_train + n_val:])


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the IDX files live: ``data_dir``, else ``$MORTAL_DATA``, else ``./data`` or
    ``../shared/data`` if they exist."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    for candidate in (Path("data"), Path("..") / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return Path("data")


def _read_idx(path: Path, expected_md5: str, magic: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"missing data file {path}; put the original IDX .gz files there, or "
                        f"name their directory: mortal --set data.data_dir=DIR, the scripts' "
                        f"--data-dir DIR, or {DATA_ENV}=DIR")
    raw = path.read_bytes()
    if _md5(raw) != expected_md5:
        raise DataError(f"corrupt data file {path}: MD5 {_md5(raw)} != {expected_md5}; "
                        "replace it with the original file")
    data = gzip.decompress(raw)
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path} is not an IDX file of the expected kind (magic {found})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist_like(name: str, data_dir: str | os.PathLike[str] | None = None,
                    n_val: int = 10_000) -> Dataset:
    """MNIST or Fashion-MNIST from the original IDX gzip files, MD5-verified.

    ``data_dir`` may hold the four files directly or a ``mnist/`` / ``fashion-mnist/``
    subdirectory (the layout of the project's shared data folder).
    """
    if name not in _MD5:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    root = find_data_dir(data_dir)
    folder = root / name if (root / name).is_dir() else root
    files = _MD5[name]
    arrays = {}
    for fname, md5 in files.items():
        magic = 2051 if "images" in fname else 2049
        arrays[fname] = _read_idx(folder / fname, md5, magic)
    x_all = arrays["train-images-idx3-ubyte.gz"].reshape(-1, 784).astype(np.float32) / 255.0
    y_all = arrays["train-labels-idx1-ubyte.gz"].astype(np.int32)
    x_test = arrays["t10k-images-idx3-ubyte.gz"].reshape(-1, 784).astype(np.float32) / 255.0
    y_test = arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int32)
    n_train = len(y_all) - n_val
    return Dataset(name, (28, 28), 10, x_all[:n_train], y_all[:n_train], x_all[n_train:],
                   y_all[n_train:], x_test, y_test)


def load(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a dataset by name: ``digits`` (embedded), ``mnist`` or ``fashion-mnist``."""
    if name == "digits":
        return load_digits()
    return load_mnist_like(name, data_dir)
