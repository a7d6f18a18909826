"""onebit.data: readers of the real on-disk formats, normalisation, augmentation, seeding and rank slicing."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from onebit.data import DataInfo, build_data, list_datasets
from onebit.data.formats import Split, write_idx
from onebit.data.memory import InMemoryLoader, crop_and_flip
from onebit.data.sharding import train_batch_bounds

REAL_DATA = Path("/work/shared/data")


# ---------------------------------------------------------------- fixtures in the real formats


def make_mnist(folder: Path, n_train=10, n_test=6, seed=0, compress=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    for stem, array in arrays.items():
        write_idx(folder / (stem + ".gz" if compress else stem), array, compress=compress)
    return arrays


def write_pickle(path: Path, entries: dict, byte_keys=True) -> None:
    with open(path, "wb") as f:  # the original files were written by Python 2: keys load as bytes
        pickle.dump({(k.encode() if byte_keys else k): v for k, v in entries.items()}, f, protocol=2)


def make_cifar10(root: Path, per_batch=6, n_test=5, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        write_pickle(folder / name, {"batch_label": name, "data": data, "labels": [(i + j) % 10 for j in range(n)]})
    return folder


def make_cifar100(root: Path, n_train=12, n_test=4, seed=0, byte_keys=False) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        entries = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                   "fine_labels": [(j * 37) % 100 for j in range(n)], "coarse_labels": [j % 20 for j in range(n)]}
        write_pickle(folder / name, entries, byte_keys=byte_keys)
    return folder


def save_image(path: Path, rng, size=(64, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


TINY_WNIDS = ["n03000000", "n01000000", "n02000000"]  # sorted order differs from wnids.txt order


def make_tinyimagenet(root: Path, per_class=2, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    top = root / "tiny-imagenet-200"
    for wnid in TINY_WNIDS:
        for k in range(per_class):
            save_image(top / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", rng)
    lines = []
    for k, wnid in enumerate(["n02000000", "n03000000", "n01000000", "n02000000"]):
        save_image(top / "val" / "images" / f"val_{k}.JPEG", rng)
        lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t10\t10")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (top / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    return top


def make_imagenet(root: Path, classes=("n01440764", "n01443537"), per_class=3, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", 1)):
        for c in classes:
            for k in range(n):
                save_image(root / split / c / f"{c}_{k}.JPEG", rng, size=(40 + 8 * k, 30))  # any aspect ratio
    return root


def collect(loader, epoch=None):
    if epoch is not None:
        loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def torchvision_reference(images_hwc: np.ndarray, mean, std) -> torch.Tensor:
    """What torchvision's ToTensor + Normalize make of uint8 HWC images."""
    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    return torch.stack([t(Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img)) for img in images_hwc])


# ---------------------------------------------------------------- names, digits


def test_list_datasets_and_unknown_name_suggests():
    assert list_datasets() == ["cifar10", "cifar100", "digits", "fashion-mnist", "imagenet", "mnist", "tinyimagenet"]
    with pytest.raises(ValueError, match="did you mean 'cifar10'"):
        build_data("cifar-10", "/nowhere")
    with pytest.raises(ValueError, match="needs data_path"):
        build_data("mnist")


def test_dataset_shapes_match_the_loaded_data(tmp_path):
    """The networks built for a data set (summary, export, load_trained_model) get the side its loader delivers."""
    from onebit.models.inputs import dataset_shape

    make_cifar10(tmp_path)
    make_tinyimagenet(tmp_path)
    make_imagenet(tmp_path / "imagenet")
    paths = {"digits": None, "cifar10": tmp_path, "tinyimagenet": tmp_path, "imagenet": tmp_path / "imagenet"}
    for name, path in paths.items():
        data = build_data(name, path, batch_size_test=2, workers=0)
        images, _ = next(iter(data.test))
        classes, channels, side = dataset_shape(name)
        assert (channels, side, side) == tuple(images.shape[1:]) == (data.info.in_channels, data.info.image_size,
                                                                      data.info.image_size), name
        assert name in ("tinyimagenet", "imagenet") or classes == data.info.num_classes  # fixtures: fewer classes
    with pytest.raises(ValueError, match="did you mean 'cifar10'"):
        dataset_shape("cifar-10")


def test_digits_split_scaling_and_normalisation():
    from sklearn.datasets import load_digits

    data = build_data("digits", batch_size=100, batch_size_test=1000)
    assert data.info == DataInfo("digits", 10, 1, 8, 1437, 360, (0.3054,), (0.3760,))
    assert len(data.train) == 15 and len(data.test) == 1
    images, labels = next(iter(data.test))
    assert images.shape == (360, 1, 8, 8) and labels.dtype == torch.int64
    assert np.bincount(labels.numpy(), minlength=10).min() >= 35  # stratified: every class ~36 times
    # every test image is a digit of sklearn's set, scaled by round(v * 255 / 16), normalised
    digits = load_digits()
    scaled = {tuple(img.ravel()): label for img, label in zip(np.round(digits.images * (255 / 16)), digits.target)}
    pixels = torch.round((images * 0.3760 + 0.3054) * 255).view(360, 64).numpy()
    assert [scaled[tuple(p)] for p in pixels] == labels.tolist()
    # the hard-coded mean/std are the training split's
    everything = torch.cat([x * 0.3760 + 0.3054 for x, _ in _unaugmented(data)])
    assert abs(float(everything.mean()) - 0.3054) < 1e-3 and abs(float(everything.std()) - 0.3760) < 1e-3


def _unaugmented(data):
    """The training split without augmentation (test-mode loader over the train images)."""
    split = Split(data.train.images.numpy(), data.train.labels.numpy())
    return InMemoryLoader(split, batch_size=10_000, mean=data.info.mean, std=data.info.std, train=False)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST idx files


@pytest.mark.parametrize("layout", ["subfolder", "flat", "uncompressed"])
def test_mnist_idx_exact_normalisation(tmp_path, layout):
    folder = {"subfolder": tmp_path / "mnist", "flat": tmp_path, "uncompressed": tmp_path / "mnist"}[layout]
    arrays = make_mnist(folder, compress=layout != "uncompressed")
    data = build_data("mnist", tmp_path, batch_size=4, batch_size_test=4)
    assert data.info == DataInfo("mnist", 10, 1, 28, 10, 6, (0.1307,), (0.3081,))
    images = torch.cat([x for x, _ in data.test])
    labels = torch.cat([y for _, y in data.test])
    expected = torchvision_reference(arrays["t10k-images-idx3-ubyte"][..., None], (0.1307,), (0.3081,))
    assert torch.equal(images, expected)  # bit-identical to ToTensor + Normalize
    assert labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert len(data.train) == 3  # 10 samples, batch 4, drop_last False


def test_fashion_mnist_folder_and_flip(tmp_path):
    make_mnist(tmp_path / "fashion-mnist")
    data = build_data("fashion-mnist", tmp_path, batch_size=10)
    assert data.info.mean == (0.2860,) and data.info.train_size == 10
    x, y = next(iter(data.train))
    assert x.shape == (10, 1, 28, 28) and sorted(y.tolist()) == list(range(10))


# ---------------------------------------------------------------- CIFAR pickles


def test_cifar10_layout_labels_and_exact_test_images(tmp_path):
    folder = make_cifar10(tmp_path)
    for data_path in (tmp_path, folder):  # the parent folder or the batches folder itself
        data = build_data("cifar10", data_path, batch_size=8, batch_size_test=3)
        assert data.info == DataInfo("cifar10", 10, 3, 32, 30, 5, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    test = pickle.load(open(folder / "test_batch", "rb"), encoding="bytes")
    images = torch.cat([x for x, _ in data.test])
    hwc = test[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # rows are R plane, G plane, B plane
    assert torch.equal(images, torchvision_reference(hwc, data.info.mean, data.info.std))
    assert torch.cat([y for _, y in data.test]).tolist() == test[b"labels"]
    train_labels = torch.cat([y for _, y in collect(data.train, 0)])
    assert sorted(train_labels.tolist()) == sorted(sum(([(i + j) % 10 for j in range(6)] for i in range(5)), []))


def test_cifar100_fine_labels_and_stats(tmp_path):
    make_cifar100(tmp_path)
    data = build_data("cifar100", tmp_path, batch_size=4)
    assert data.info.num_classes == 100 and data.info.mean == (0.507, 0.487, 0.441)
    assert (data.info.train_size, data.info.test_size) == (12, 4)
    assert torch.cat([y for _, y in data.test]).tolist() == [0, 37, 74, 11]


# ---------------------------------------------------------------- augmentation


def test_crop_and_flip_equals_torchvision_functional():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 9, 7), dtype=torch.uint8, generator=g)
    offsets = torch.randint(0, 5, (16, 2), generator=g)
    flips = torch.rand(16, generator=g) < 0.5
    out = crop_and_flip(images, offsets, flips, padding=2)
    for n in range(16):
        expected = TF.crop(TF.pad(images[n], [2]), int(offsets[n, 0]), int(offsets[n, 1]), 9, 7)
        expected = TF.hflip(expected) if flips[n] else expected
        assert torch.equal(out[n], expected)


def test_cifar_train_augmentation_shifts_and_flips(tmp_path):
    """Every image is the ramp pixel = 8*column + 1: each augmented row must be the ramp shifted by |left - 4|
    columns (zeros where the padding shows), increasing if not flipped and decreasing if flipped."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    ramp = np.broadcast_to((8 * np.arange(32) + 1).astype(np.uint8), (3, 32, 32)).reshape(1, 3072)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, {"data": np.repeat(ramp, 40, 0), "labels": [0] * 40})
    data = build_data("cifar10", tmp_path, batch_size=200)
    mean, std = torch.tensor(data.info.mean).view(3, 1, 1), torch.tensor(data.info.std).view(3, 1, 1)
    flipped, shifts = [], set()
    for x, _ in collect(data.train, 0):
        pixels = torch.round((x * std + mean) * 255).to(torch.int64)
        for img in pixels:
            row = img[0, 16]
            assert torch.equal(img, row.expand(3, 32, 32)) or torch.equal(img[:, 4:28], row.expand(3, 24, 32))
            values = row[row > 0]
            steps = values.diff().unique().tolist()
            assert steps in ([8], [-8])
            flipped.append(steps == [-8])
            shifts.add(32 - len(values))
    assert 0.3 < np.mean(flipped) < 0.7 and shifts == {0, 1, 2, 3, 4}
    test_pixels = torch.round((next(iter(data.test))[0] * std + mean) * 255)
    assert torch.equal(test_pixels[0, 0, 0], torch.from_numpy(ramp[0, :32]).float())  # test split: untouched


def test_mnist_train_augmentation_shifts_without_flips(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    ramp = np.broadcast_to((9 * np.arange(28) + 1).astype(np.uint8), (30, 28, 28))
    for prefix, n in (("train", 30), ("t10k", 2)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", ramp[:n])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.zeros(n, np.uint8))
    data = build_data("mnist", tmp_path, batch_size=30)
    x, _ = next(iter(data.train))
    rows = torch.round((x * 0.3081 + 0.1307) * 255).to(torch.int64)[:, 0, 14]
    shifts = {28 - int((row > 0).sum()) for row in rows}
    assert shifts == {0, 1, 2} and all(row[row > 0].diff().unique().tolist() == [9] for row in rows)


# ---------------------------------------------------------------- seeding, resume, distributed slicing


def test_batches_depend_only_on_seed_and_epoch(tmp_path):
    make_cifar10(tmp_path, per_batch=10)
    a = build_data("cifar10", tmp_path, batch_size=16, seed=1)
    b = build_data("cifar10", tmp_path, batch_size=16, seed=1)
    collect(a.train, 0), collect(a.train, 1)  # a has run two epochs, b resumes directly at epoch 2
    epoch2_a, epoch2_b = collect(a.train, 2), collect(b.train, 2)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(epoch2_a, epoch2_b))
    assert not torch.equal(epoch2_a[0][0], collect(a.train, 3)[0][0])
    other_seed = build_data("cifar10", tmp_path, batch_size=16, seed=2)
    assert not torch.equal(epoch2_a[0][0], collect(other_seed.train, 2)[0][0])


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_a_mid_epoch_start_yields_the_remaining_batches_unchanged(tmp_path, name):
    """What a mid-epoch resume relies on: ``set_epoch(e, k)`` yields batches k.. of epoch e exactly,
    without producing the first k (folder images are not even decoded)."""
    (make_cifar10(tmp_path, per_batch=10) if name == "cifar10" else make_imagenet(tmp_path))
    loader = build_data(name, tmp_path, batch_size=1, seed=3, workers=0).train
    whole = collect(loader, 1)
    loader.set_epoch(1, 2)
    rest = collect(loader)
    assert len(whole) > 3 and len(rest) == len(whole) - 2
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(whole[2:], rest))
    assert len(collect(loader, 1)) == len(whole)  # set_epoch(e) starts from the first batch again


def test_train_batch_bounds():
    assert train_batch_bounds(10, 4, 1, False) == [(0, 4), (4, 8), (8, 10)]
    assert train_batch_bounds(10, 4, 1, True) == [(0, 4), (4, 8)]
    assert train_batch_bounds(11, 4, 2, False) == [(0, 4), (4, 8), (8, 10)]  # tail 3 cut to 2 = multiple of W
    assert train_batch_bounds(9, 4, 2, False) == [(0, 4), (4, 8)]  # tail of 1 < W dropped


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_receive_slices_of_the_one_process_batch(tmp_path, world_size):
    make_cifar10(tmp_path, per_batch=9, n_test=11)  # 45 train samples: tail of 45 % 8 = 5 is cut to 4 for W = 2, 4
    single = build_data("cifar10", tmp_path, batch_size=8, batch_size_test=4, seed=3)
    ranks = [build_data("cifar10", tmp_path, batch_size=8, batch_size_test=4, seed=3, rank=r, world_size=world_size)
             for r in range(world_size)]
    expected = collect(single.train, 5)
    per_rank = [collect(d.train, 5) for d in ranks]
    assert all(len(d.train) == 6 for d in ranks)
    for step, (x, y) in enumerate(expected[:5]):
        assert torch.equal(torch.cat([p[step][0] for p in per_rank]), x)
        assert torch.equal(torch.cat([p[step][1] for p in per_rank]), y)
    assert torch.equal(torch.cat([p[5][0] for p in per_rank]), expected[5][0][:4])
    # test split: contiguous shards, every sample exactly once
    shards = [torch.cat([x for x, _ in d.test]) for d in ranks]
    assert torch.equal(torch.cat(shards), torch.cat([x for x, _ in single.test]))
    assert sorted(len(s) for s in shards)[-1] - sorted(len(s) for s in shards)[0] <= 1


def test_distributed_arguments_are_checked():
    with pytest.raises(ValueError, match="divisible by the number of processes 3"):
        build_data("digits", batch_size=256, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        build_data("digits", batch_size=256, rank=2, world_size=2)


def test_drop_last():
    assert len(build_data("digits", batch_size=256, drop_last=True).train) == 1437 // 256
    assert len(build_data("digits", batch_size=256).train) == 6


# ---------------------------------------------------------------- image folders


def test_tinyimagenet_tree(tmp_path):
    make_tinyimagenet(tmp_path)
    data = build_data("tinyimagenet", tmp_path, batch_size=4, batch_size_test=4, workers=0)
    assert data.info == DataInfo("tinyimagenet", 3, 3, 224, 6, 4, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262))
    x, y = next(iter(collect(data.train, 0)))
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    images, labels = next(iter(data.test))
    assert labels.tolist() == [1, 2, 0, 1]  # classes in sorted wnid order (ImageFolder), from val_annotations.txt
    reference = transforms.Compose([transforms.Resize(224), transforms.ToTensor(),
                                    transforms.Normalize(data.info.mean, data.info.std)])
    val0 = Image.open(tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_0.JPEG").convert("RGB")
    assert torch.equal(images[0], reference(val0))


def test_folder_augmentation_is_seeded_per_sample(tmp_path):
    """Same batches whatever the number of workers or processes (each sample's RNG is seeded by seed, epoch, index)."""
    make_imagenet(tmp_path)
    kwargs = dict(batch_size=4, seed=5)
    one = collect(build_data("imagenet", tmp_path, workers=0, **kwargs).train, 1)
    two_workers = collect(build_data("imagenet", tmp_path, workers=2, **kwargs).train, 1)
    ranks = [collect(build_data("imagenet", tmp_path, workers=0, rank=r, world_size=2, **kwargs).train, 1)
             for r in range(2)]
    assert [x.shape for x, _ in one] == [(4, 3, 224, 224), (2, 3, 224, 224)]  # 6 samples: tail of 2 kept
    for step, (x, y) in enumerate(one):
        assert torch.equal(two_workers[step][0], x) and torch.equal(two_workers[step][1], y)
        assert torch.equal(torch.cat([ranks[0][step][0], ranks[1][step][0]]), x)
    other_epoch = collect(build_data("imagenet", tmp_path, workers=0, **kwargs).train, 2)
    assert not torch.equal(other_epoch[0][0], one[0][0])
    val = build_data("imagenet", tmp_path, workers=0, batch_size_test=8).test
    images, labels = next(iter(val))
    assert images.shape == (2, 3, 224, 224) and labels.tolist() == [0, 1]


def test_dali_is_checked(tmp_path):
    make_imagenet(tmp_path)
    with pytest.raises(ImportError, match="pip install"):
        build_data("imagenet", tmp_path, use_dali=True)
    with pytest.raises(ValueError, match="only available for imagenet"):
        build_data("cifar10", tmp_path, use_dali=True)


# ---------------------------------------------------------------- bad input


def _corrupt_idx(folder: Path, stem: str, raw: bytes) -> None:
    with gzip.open(folder / f"{stem}.gz", "wb") as f:
        f.write(raw)


@pytest.mark.parametrize(
    "damage, error, message",
    [
        ("missing", FileNotFoundError, "t10k-labels-idx1-ubyte"),
        ("magic", ValueError, "expected magic 0x00000801"),
        ("short", ValueError, "header announces shape"),
        ("truncated_gzip", ValueError, "truncated or corrupt"),
        ("label_range", ValueError, r"labels must lie in \[0, 9\]"),
        ("label_count", ValueError, "5 labels for 6 images"),
    ],
)
def test_bad_idx_files(tmp_path, damage, error, message):
    folder = tmp_path / "mnist"
    make_mnist(folder)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    if damage == "missing":
        labels.unlink()
    elif damage == "magic":
        write_idx(labels, np.zeros(6, np.uint8), magic=bytes([0, 0, 8, 3]))
    elif damage == "short":
        _corrupt_idx(folder, "t10k-labels-idx1-ubyte", bytes([0, 0, 8, 1]) + struct.pack(">i", 6) + bytes(5))
    elif damage == "truncated_gzip":
        labels.write_bytes(labels.read_bytes()[:-6])
    elif damage == "label_range":
        write_idx(labels, np.array([0, 1, 2, 10, 4, 5], np.uint8))
    elif damage == "label_count":
        write_idx(labels, np.zeros(5, np.uint8))
    with pytest.raises(error, match=message):
        build_data("mnist", tmp_path)


def test_missing_folders_name_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/\{data_batch_1..5, test_batch\}"):
        build_data("cifar10", tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        build_data("fashion-mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python/\{train, test\}"):
        build_data("cifar100", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train/<wnid>/images/\*.JPEG"):
        build_data("tinyimagenet", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"<data_path>/train/<class>/\*.JPEG"):
        build_data("imagenet", tmp_path)


@pytest.mark.parametrize(
    "damage, error, message",
    [
        ("missing_batch", FileNotFoundError, "data_batch_3"),
        ("garbage", ValueError, "cannot unpickle"),
        ("truncated", ValueError, "cannot unpickle"),
        ("no_labels", ValueError, "no 'labels' entry"),
        ("shape", ValueError, r"shape \(N, 3072\)"),
        ("label_range", ValueError, r"labels must lie in \[0, 9\]"),
        ("label_count", ValueError, "5 labels for 6 images"),
    ],
)
def test_bad_cifar10_files(tmp_path, damage, error, message):
    folder = make_cifar10(tmp_path)
    path = folder / "data_batch_3"
    good = {"data": np.zeros((6, 3072), np.uint8), "labels": [0] * 6}
    if damage == "missing_batch":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"this is not a pickle")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "no_labels":
        write_pickle(path, {"data": good["data"]})
    elif damage == "shape":
        write_pickle(path, {"data": np.zeros((6, 1024), np.uint8), "labels": good["labels"]})
    elif damage == "label_range":
        write_pickle(path, {"data": good["data"], "labels": [0, 1, 2, 3, 4, 10]})
    elif damage == "label_count":
        write_pickle(path, {"data": good["data"], "labels": [0] * 5})
    with pytest.raises(error, match=message):
        build_data("cifar10", tmp_path)


def test_bad_cifar100_labels(tmp_path):
    folder = make_cifar100(tmp_path)
    write_pickle(folder / "test", {"data": np.zeros((2, 3072), np.uint8), "fine_labels": [5, 100]})
    with pytest.raises(ValueError, match=r"fine_labels.*\[0, 99\]"):
        build_data("cifar100", tmp_path)


def test_bad_folder_layouts(tmp_path):
    top = make_tinyimagenet(tmp_path / "tiny")
    annotations = top / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn09999999\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:1: .*wnid of a train folder"):
        build_data("tinyimagenet", tmp_path / "tiny")
    annotations.write_text("val_9.JPEG\tn01000000\t0\t0\t1\t1\n")
    with pytest.raises(FileNotFoundError, match="val_9.JPEG is missing"):
        build_data("tinyimagenet", top)
    root = make_imagenet(tmp_path / "imagenet")
    (root / "val" / "n01443537").rename(root / "val" / "n99999999")
    with pytest.raises(ValueError, match="class folders differ"):
        build_data("imagenet", root)


# ---------------------------------------------------------------- the real copies


@pytest.mark.skipif(not (REAL_DATA / "cifar-10-batches-py").is_dir(), reason="no real CIFAR-10 copy")
def test_real_cifar10():
    data = build_data("cifar10", REAL_DATA, batch_size=500, batch_size_test=1000)
    assert (data.info.train_size, data.info.test_size, len(data.train), len(data.test)) == (50000, 10000, 100, 10)
    x, y = next(iter(data.test))
    assert x.shape == (1000, 3, 32, 32) and np.bincount(data.train.labels.numpy()).tolist() == [5000] * 10
    # README: train mean 125.307, 122.950, 113.865 (0..255)
    assert np.allclose(data.train.images.float().mean((0, 2, 3)).numpy(), [125.307, 122.950, 113.865], atol=1e-2)


@pytest.mark.skipif(not (REAL_DATA / "fashion-mnist").is_dir(), reason="no real Fashion-MNIST copy")
def test_real_fashion_mnist():
    data = build_data("fashion-mnist", REAL_DATA, batch_size=600)
    assert (data.info.train_size, data.info.test_size, data.info.image_size, len(data.train)) == (60000, 10000, 28, 100)
    assert np.bincount(data.test.labels.numpy()).tolist() == [1000] * 10
    assert abs(float(data.train.images.float().mean()) / 255 - 0.2860) < 1e-4
