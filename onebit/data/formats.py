"""Readers of the small data sets' on-disk formats into uint8 arrays ``(N, C, H, W)`` plus int64 labels,
and writers of the same formats (test fixtures, subsets of the real files for benchmarks).

* MNIST / Fashion-MNIST: the four idx files (``.gz`` or uncompressed), parsed here from their headers;
* CIFAR-10 / CIFAR-100: the "python version" pickles. Shapes, counts and label ranges are validated, not md5
  sums (the copy under /work/shared/data has no ``filenames`` key, so torchvision's md5 check fails on it);
* digits: scikit-learn's bundled 8x8 digits (values 0..16), no files needed.
"""
from __future__ import annotations

import gzip
import pickle
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Split:
    images: np.ndarray
    """uint8 (N, C, H, W)."""
    labels: np.ndarray
    """int64 (N,)."""


def _check_labels(labels: np.ndarray, num_classes: int, num_images: int, where: str) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1 or len(labels) != num_images:
        raise ValueError(f"{where}: {len(labels)} labels for {num_images} images")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{where}: labels must lie in [0, {num_classes - 1}], found range [{labels.min()}, {labels.max()}]"
        )
    return labels


def find_folder(data_path: str | Path, names: list[str], marker: str, dataset: str, expected: str) -> Path:
    """The first of ``data_path/<name>`` or ``data_path`` itself that holds ``marker`` (a file name)."""
    root = Path(data_path).expanduser()
    candidates = [root / name for name in names] + [root]
    for folder in candidates:
        if (folder / marker).is_file() or (folder / f"{marker}.gz").is_file():
            return folder
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"{dataset}: no data found; expected {expected} in one of: {tried}")


# ---------------------------------------------------------------- idx (MNIST, Fashion-MNIST)

IDX_UBYTE = 0x08
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes: magic ``00 00 08 <ndim>``, ndim big-endian int32 sizes, then the data."""
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: cannot read idx file ({e}); the file is truncated or corrupt") from e
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, IDX_UBYTE, ndim]):
        raise ValueError(
            f"{path}: not an idx file of {ndim}-d unsigned bytes: expected magic 0x{0x0800 + ndim:08x}, "
            f"found 0x{raw[:4].hex() or 'empty'}"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header announces shape {shape} ({expected} bytes), file holds {len(raw) - header}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"missing {folder / (stem + '.gz')} (an idx file, gzipped or not)")


def read_mnist(folder: Path, split: str) -> Split:
    images_path = _idx_file(folder, MNIST_FILES[split][0])
    labels_path = _idx_file(folder, MNIST_FILES[split][1])
    images = read_idx(images_path, ndim=3)
    labels = _check_labels(read_idx(labels_path, ndim=1), 10, len(images), str(labels_path))
    return Split(images[:, None].copy(), labels)


# ---------------------------------------------------------------- CIFAR pickles

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def _unpickle(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"missing {path}")
    try:
        with open(path, "rb") as f:
            entries = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise ValueError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); the file is truncated or corrupt") from e
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(entries).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entries.items()}


def read_cifar(folder: Path, split: str, num_classes: int) -> Split:
    """CIFAR-10 (``labels``, 10 classes) or CIFAR-100 (``fine_labels``, 100 classes) batches of one split."""
    files = (CIFAR10_FILES if num_classes == 10 else CIFAR100_FILES)[split]
    label_key = "labels" if num_classes == 10 else "fine_labels"
    images, labels = [], []
    for name in files:
        path = folder / name
        entries = _unpickle(path)
        for key in ("data", label_key):
            if key not in entries:
                raise ValueError(f"{path}: no {key!r} entry (keys: {sorted(entries)})")
        data = np.asarray(entries["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), found {data.dtype} {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32))  # rows are channel-major RGB: R plane, G plane, B plane
        labels.append(_check_labels(entries[label_key], num_classes, len(data), f"{path} {label_key!r}"))
    return Split(np.concatenate(images), np.concatenate(labels))


# ---------------------------------------------------------------- writers


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool = True, magic: bytes | None = None) -> None:
    """An idx file of unsigned bytes (gzipped unless ``compress=False``); ``magic`` overrides the header's first
    four bytes (to write broken files)."""
    header = (magic or bytes([0, 0, IDX_UBYTE, array.ndim])) + np.array(array.shape, dtype=">i4").tobytes()
    raw = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(raw)
    else:
        Path(path).write_bytes(raw)


def write_mnist(folder: str | Path, train: Split, test: Split) -> Path:
    """The four gzipped idx files of ``train`` and ``test`` (images ``(N, 1, H, W)``) in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("test", test)):
        images, labels = MNIST_FILES[split]
        write_idx(folder / f"{images}.gz", data.images[:, 0])
        write_idx(folder / f"{labels}.gz", data.labels.astype(np.uint8))
    return folder


def write_cifar10(folder: str | Path, train: Split, test: Split) -> Path:
    """CIFAR-10's python pickles in ``folder`` (``cifar-10-batches-py``): ``train`` over the five batches."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = np.array_split(np.arange(len(train.labels)), len(CIFAR10_FILES["train"]))
    batches = [(name, train.images[idx], train.labels[idx]) for name, idx in zip(CIFAR10_FILES["train"], parts)]
    for name, images, labels in batches + [(CIFAR10_FILES["test"][0], test.images, test.labels)]:
        entries = {b"data": images.reshape(len(images), 3 * 32 * 32).astype(np.uint8), b"labels": labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(entries, protocol=2))
    return folder


# ---------------------------------------------------------------- scikit-learn digits

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0  # the split is fixed (not the run's seed) so that every run is evaluated on the same 360 images


def read_digits(split: str) -> Split:
    """The 1797 8x8 digits, stratified 1437/360 split; values 0..16 scaled to uint8 by round(v * 255 / 16)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None]
    train_idx, test_idx = train_test_split(
        np.arange(len(images)), test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    idx = np.sort(train_idx if split == "train" else test_idx)
    return Split(images[idx], digits.target[idx].astype(np.int64))
