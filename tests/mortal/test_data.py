"""Datasets: the embedded digits, MNIST-like IDX files with MD5 checks, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from mortal import data

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                  reason="../shared/data is not beside the checkout")


def test_embedded_digits_split_and_range() -> None:
    ds = data.load("digits")
    assert ds.x_train.shape == (1200, 64) and ds.x_val.shape == (297, 64)
    assert ds.x_test.shape == (300, 64) and ds.image_shape == (8, 8)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() == 1.0
    for y in (ds.y_train, ds.y_val, ds.y_test):
        assert set(np.unique(y)) == set(range(10))
    again = data.load("digits")
    assert np.array_equal(ds.x_test, again.x_test)  # a fixed split


@needs_shared
def test_mnist_is_read_and_split_as_in_hintons_recipe() -> None:
    ds = data.load("mnist", SHARED)
    assert ds.x_train.shape == (50_000, 784) and ds.x_val.shape == (10_000, 784)
    assert ds.x_test.shape == (10_000, 784)
    assert ds.y_train[:5].tolist() == [5, 0, 4, 1, 9]  # the official order
    assert ds.y_test[:3].tolist() == [7, 2, 1]
    assert ds.x_train.max() == 1.0 and ds.x_train.min() == 0.0
    assert abs(ds.x_train.mean() - 0.1307) < 0.001  # the well-known MNIST pixel mean


@needs_shared
def test_fashion_mnist_loads_from_its_subdirectory() -> None:
    ds = data.load("fashion-mnist", SHARED)
    assert ds.x_train.shape == (50_000, 784)
    assert ds.y_test[:3].tolist() == [9, 2, 1]


def test_missing_file_names_it_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(data.DataError, match=r"missing data file .*train-images-idx3-ubyte.gz.*"
                                             r"--data-dir"):
        data.load("mnist", tmp_path)


@needs_shared
def test_corrupt_file_is_detected_by_md5(tmp_path: Path) -> None:
    for f in (SHARED / "mnist").iterdir():
        shutil.copy(f, tmp_path / f.name)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[-1] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(data.DataError, match=r"corrupt data file .*t10k-labels"):
        data.load("mnist", tmp_path)


def test_environment_variable_points_to_the_data(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    assert data.find_data_dir() == tmp_path
    assert data.find_data_dir("elsewhere") == Path("elsewhere")


def test_unknown_dataset_and_bad_values_are_clear_errors() -> None:
    with pytest.raises(data.DataError, match="unknown dataset 'cifar'"):
        data.load("cifar")
    x = np.zeros((3, 4), np.float32)
    x[1, 2] = np.nan
    y = np.zeros(3, np.int32)
    with pytest.raises(data.DataError, match="NaN or Inf"):
        data.Dataset("t", (2, 2), 2, x, y, x[:0], y[:0], x[:0], y[:0])
    with pytest.raises(data.DataError, match="labels must lie in"):
        data.Dataset("t", (2, 2), 2, np.zeros((3, 4), np.float32), y + 5, x[:0], y[:0], x[:0],
                     y[:0])
