"""IDX loaders: real files round-trip; every kind of broken file gets a clear DatasetError."""
import gzip
import os

import numpy as np
import pytest

from fastcontrast.experiment.data import (
    IDX_FILES, DatasetError, load_dataset, load_digits, read_idx, write_idx)


def make_release(folder, n_train=12, n_test=5, gz=True, rows=28, cols=28, dotted=False):
    """Write a tiny MNIST-style release (random pixels, labels 0..9) into folder."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, rows, cols)),
        "train_labels": np.arange(n_train) % 10,
        "test_images": rng.integers(0, 256, (n_test, rows, cols)),
        "test_labels": np.arange(n_test) % 10,
    }
    paths = {}
    for key, stem in IDX_FILES.items():
        name = stem.replace("-idx", ".idx") if dotted else stem
        paths[key] = os.path.join(folder, name + (".gz" if gz else ""))
        write_idx(paths[key], arrays[key])
    return arrays, paths


@pytest.mark.parametrize("gz", [True, False])
def test_idx_release_round_trips(tmp_path, gz):
    arrays, _ = make_release(str(tmp_path), gz=gz)
    data = load_dataset("fashion-mnist", str(tmp_path))
    assert data.x_train.shape == (12, 784) and data.x_test.shape == (5, 784)
    assert data.x_train.dtype == np.float32 and 0.0 <= data.x_train.min() <= data.x_train.max() <= 1.0
    np.testing.assert_array_equal(data.x_train * 255.0,
                                  arrays["train_images"].reshape(12, -1).astype(np.float32))
    np.testing.assert_array_equal(data.y_test, arrays["test_labels"])
    assert data.num_classes == 10 and data.class_names()[9] == "Ankle boot"


def test_dotted_file_names_are_found(tmp_path):
    make_release(str(tmp_path), dotted=True, gz=False)
    assert load_dataset("mnist", str(tmp_path)).x_test.shape == (5, 784)


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", str(tmp_path / "nowhere"))


def test_missing_files_are_named(tmp_path):
    _, paths = make_release(str(tmp_path))
    os.remove(paths["test_labels"])
    with pytest.raises(DatasetError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\].*--data-dir"):
        load_dataset("mnist", str(tmp_path))


def test_wrong_magic(tmp_path):
    _, paths = make_release(str(tmp_path))
    # labels where images belong: magic 0x801 instead of 0x803
    write_idx(paths["train_images"], np.zeros(12, dtype=np.uint8))
    with pytest.raises(DatasetError, match="magic number 0x00000801, expected 0x00000803"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_truncated_data(tmp_path):
    path = str(tmp_path / "t10k-images-idx3-ubyte")
    write_idx(path, np.zeros((4, 28, 28), dtype=np.uint8))
    with open(path, "r+b") as f:
        f.truncate(16 + 3 * 784 + 10)
    with pytest.raises(DatasetError, match="truncated: header says 4×28×28 = 3136 bytes"):
        read_idx(path, 0x803)


def test_truncated_header(tmp_path):
    path = str(tmp_path / "labels")
    with open(path, "wb") as f:
        f.write(bytes([0, 0, 8, 1, 0, 0]))
    with pytest.raises(DatasetError, match="truncated header"):
        read_idx(path, 0x801)
    with open(path, "wb") as f:
        f.write(b"\x00")
    with pytest.raises(DatasetError, match="too short"):
        read_idx(path, 0x801)


def test_truncated_gzip(tmp_path):
    path = str(tmp_path / "x.gz")
    write_idx(path, np.ones((50, 28, 28), dtype=np.uint8))
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_idx(path, 0x803)


def test_not_gzip_despite_name(tmp_path):
    path = str(tmp_path / "x.gz")
    with open(path, "wb") as f:
        f.write(b"this is not gzip data at all")
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        read_idx(path, 0x803)


def test_trailing_bytes(tmp_path):
    path = str(tmp_path / "y")
    write_idx(path, np.arange(7, dtype=np.uint8))
    with open(path, "ab") as f:
        f.write(b"\x00\x00")
    with pytest.raises(DatasetError, match="longer than its header says"):
        read_idx(path, 0x801)


def test_image_label_count_mismatch(tmp_path):
    _, paths = make_release(str(tmp_path))
    write_idx(paths["train_labels"], np.arange(11) % 10)
    with pytest.raises(DatasetError, match="holds 12 images but .* holds 11 labels"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_image_shape_mismatch_between_splits(tmp_path):
    _, paths = make_release(str(tmp_path))
    write_idx(paths["test_images"], np.zeros((5, 27, 28), dtype=np.uint8))
    with pytest.raises(DatasetError, match="28×28 but test images are 27×28"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_label_out_of_range(tmp_path):
    _, paths = make_release(str(tmp_path))
    write_idx(paths["test_labels"], np.array([0, 1, 2, 3, 12]))
    with pytest.raises(DatasetError, match="label 12"):
        load_dataset("fashion-mnist", str(tmp_path))


def test_gzip_magic_is_checked_after_decompression(tmp_path):
    path = str(tmp_path / "z.gz")
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")  # float type code, not ubyte
    with pytest.raises(DatasetError, match="not an IDX labels file"):
        read_idx(path, 0x801)


def test_digits_split_is_stratified_and_fixed():
    a, b = load_digits(0), load_digits(0)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert len(a.y_train) + len(a.y_test) == 1797
    counts = np.bincount(a.y_test, minlength=10)
    assert counts.min() >= 40 and counts.max() <= 50
    assert a.x_train.max() == 1.0 and a.num_features == 64


def test_subsample_sizes():
    data = load_dataset("digits", train_size=100, test_size=30)
    assert len(data.y_train) == 100 and len(data.y_test) == 30
