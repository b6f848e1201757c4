"""Dataset formats and registered loaders, on tiny files written here (no network)."""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from palimpsest.core.errors import ConfigError, DataError, UnknownNameError
from palimpsest.data import datasets
from palimpsest.data.datasets import dataset_info, load_dataset
from palimpsest.data.formats import (download, download_cifar, download_mnist_like, extract_tar,
                                     read_cifar, read_idx, read_npz, write_cifar, write_idx, write_npz)

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_tiny_mnist(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8)}
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


def tiny_cifar(variant: int, n_train: int = 10, n_test: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, variant, n_train), rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
            rng.integers(0, variant, n_test), [f"class {i}" for i in range(variant)])


# ------------------------------------------------------------------------------------------ IDX

@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, dtype, suffix):
    rng = np.random.default_rng(1)
    array = (rng.standard_normal((3, 5, 7)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative and back.flags.writeable
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_big_endian_and_gzip_found_by_magic(tmp_path):
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    raw = write_idx(tmp_path / "x", array).read_bytes()
    assert raw[:4] == bytes([0, 0, 0x0C, 2]) and raw[4:12] == b"\x00\x00\x00\x02\x00\x00\x00\x03"
    assert raw[12:16] == b"\x00\x00\x00\x00" and raw[16:20] == b"\x00\x00\x00\x01"
    misnamed = tmp_path / "compressed-without-suffix"
    misnamed.write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(misnamed), array)


def test_idx_errors_say_what_and_how(tmp_path):
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    good = write_idx(tmp_path / "good", np.zeros((4, 4), np.uint8)).read_bytes()
    (tmp_path / "short").write_bytes(good[:-3])
    with pytest.raises(DataError, match="wrong size") as info:
        read_idx(tmp_path / "short")
    assert "fix:" in str(info.value)
    with pytest.raises(DataError, match="astype"):
        write_idx(tmp_path / "big", np.zeros(3, np.int64))
    with pytest.raises(DataError, match="file not found"):
        read_idx(tmp_path / "absent")


# ---------------------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("variant", [10, 100])
def test_cifar_round_trip_and_loader(tmp_path, variant):
    x_train, y_train, x_test, y_test, names = tiny_cifar(variant)
    folder = write_cifar(tmp_path, variant, x_train, y_train, x_test, y_test, names)
    assert folder.name == ("cifar-10-batches-py" if variant == 10 else "cifar-100-python")
    expected_files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
                      if variant == 10 else ["train", "test", "meta"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected_files)
    # the official files are Python 2 pickles: bytes keys, read with encoding="bytes"
    with (folder / expected_files[0]).open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    assert b"data" in batch and (b"labels" if variant == 10 else b"fine_labels") in batch
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072

    for root in (tmp_path, folder):  # the parent folder or the batches folder itself
        xtr, ytr, xte, yte, back_names = read_cifar(root, variant)
        np.testing.assert_array_equal(xtr, x_train)
        np.testing.assert_array_equal(ytr, y_train)
        np.testing.assert_array_equal(xte, x_test)
        np.testing.assert_array_equal(yte, y_test)
        assert back_names == tuple(names) and ytr.dtype == np.int64

    data = load_dataset(f"cifar{variant}", root=tmp_path)
    assert data.x_train.shape == (10, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.n_classes == variant and data.class_names == tuple(names)
    assert abs(float(data.x_train.mean())) < 1e-4 and abs(float(data.x_train.std()) - 1) < 1e-3
    # channel-major rows: pixel (c, i, j) of image 0 keeps its place after scaling
    scaled = x_train.astype(np.float32) / 255
    expected = (scaled - scaled.mean()) / scaled.std()
    np.testing.assert_allclose(data.x_train, expected, atol=1e-5)


def test_cifar_refuses_pickles_that_name_other_objects(tmp_path):
    x_train, y_train, x_test, y_test, names = tiny_cifar(10)
    folder = write_cifar(tmp_path, 10, x_train, y_train, x_test, y_test, names)
    with (folder / "test_batch").open("wb") as handle:
        pickle.dump(OrderedDict(data=x_test.reshape(4, -1), labels=list(y_test)), handle)
    with pytest.raises(DataError, match="collections.OrderedDict"):
        read_cifar(tmp_path, 10)


def test_cifar_without_root_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("PALIMPSEST_CIFAR10", raising=False)
    with pytest.raises(DataError, match="download=True"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="data_batch_1") as info:
        load_dataset("cifar10", root=tmp_path)
    assert "cifar-10-python.tar.gz" in str(info.value)


# ------------------------------------------------------------------------------------------ npz

def test_npz_loader(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=rng.integers(0, 256, (12, 2, 3, 3), dtype=np.uint8), y_train=np.arange(12) % 4,
             x_test=rng.integers(0, 256, (5, 2, 3, 3), dtype=np.uint8), y_test=np.arange(5) % 3)
    data = load_dataset("npz", path=path)
    assert data.input_shape == (2, 3, 3) and data.class_names == ("0", "1", "2", "3")
    assert data.x_train.dtype == np.float32 and abs(float(data.x_train.mean())) < 1e-5
    raw = load_dataset("npz", path=path, scale=False)
    assert 0.0 <= raw.x_train.min() and raw.x_train.max() <= 1.0

    named = write_npz(tmp_path / "named.npz", np.zeros((2, 4)), np.array([0, 1]), np.zeros((1, 4)),
                      np.array([1]), class_names=["cat", "dog"])
    assert read_npz(named)[4] == ("cat", "dog")
    assert load_dataset("npz", path=named).class_names == ("cat", "dog")


def test_npz_errors_name_the_problem(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.zeros(2, int), x_test=np.zeros((1, 3)))
    with pytest.raises(DataError, match="y_test") as info:
        load_dataset("npz", path=path)
    assert "np.savez" in str(info.value)
    np.savez(path, x_train=np.zeros((2, 3)), y_train=np.zeros(2), x_test=np.zeros((1, 3)), y_test=np.zeros(1))
    with pytest.raises(DataError, match="integer class ids"):
        load_dataset("npz", path=path)
    with pytest.raises(ConfigError, match="path="):
        load_dataset("npz")


# ------------------------------------------------------------------------------------- download

def test_download_from_file_url_is_atomic_and_checked(tmp_path):
    source = tmp_path / "remote" / "blob.bin"
    source.parent.mkdir()
    source.write_bytes(b"palimpsest" * 1000)
    dest = tmp_path / "local" / "blob.bin"
    assert download(source.as_uri(), dest, md5=md5_of(source)) == dest
    assert dest.read_bytes() == source.read_bytes()

    bad_dest = tmp_path / "local" / "bad.bin"
    with pytest.raises(DataError, match="checksum mismatch") as info:
        download(source.as_uri(), bad_dest, md5="0" * 32)
    assert str(bad_dest) in str(info.value)
    assert not bad_dest.exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]  # no half files left

    with pytest.raises(DataError, match="offline") as info:
        download((tmp_path / "nowhere.bin").as_uri(), tmp_path / "local" / "x.bin")
    assert "by hand" in str(info.value)


def test_mnist_download_then_load(tmp_path, monkeypatch):
    remote = tmp_path / "mirror"
    arrays = write_tiny_mnist(remote)
    md5s = {f"{name}.gz": md5_of(remote / f"{name}.gz") for name in arrays}
    got = download_mnist_like(tmp_path / "plain", remote.as_uri() + "/", md5s)
    assert [p.name for p in got] == list(md5s)

    monkeypatch.setattr(datasets, "MNIST_URL", remote.as_uri())
    monkeypatch.setattr(datasets, "MNIST_MD5", md5s)
    monkeypatch.setenv("PALIMPSEST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PALIMPSEST_MNIST", raising=False)
    with pytest.raises(DataError, match="download=True"):
        load_dataset("mnist")
    data = load_dataset("mnist", download=True)
    assert (tmp_path / "cache" / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    np.testing.assert_array_equal(data.y_train, arrays["train-labels-idx1-ubyte"])
    pixels = arrays["train-images-idx3-ubyte"].astype(np.float32) / 255
    np.testing.assert_allclose(data.x_train[:, 0], (pixels - pixels.mean()) / pixels.std(), atol=1e-5)


def test_idx_loader_accepts_uncompressed_files(tmp_path):
    arrays = write_tiny_mnist(tmp_path, gz=False)
    data = load_dataset("mnist", root=tmp_path)
    np.testing.assert_array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_cifar_download_from_file_url(tmp_path):
    x_train, y_train, x_test, y_test, names = tiny_cifar(10)
    build = tmp_path / "build"
    write_cifar(build, 10, x_train, y_train, x_test, y_test, names)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(build / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    root = tmp_path / "data"
    folder = download_cifar(root, 10, url=archive.as_uri(), md5=md5_of(archive))
    assert folder == root / "cifar-10-batches-py"
    np.testing.assert_array_equal(read_cifar(root, 10)[0], x_train)
    with pytest.raises(DataError, match="checksum"):
        download_cifar(tmp_path / "other", 10, url=archive.as_uri(), md5="f" * 32)


def _tar_with(path: Path, member: tarfile.TarInfo, payload: bytes = b"boom") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(payload) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return path


@pytest.mark.parametrize("member_name, kind, reason", [
    ("../evil.txt", tarfile.REGTYPE, "'..'"),
    ("cifar-10-batches-py/../../evil.txt", tarfile.REGTYPE, "'..'"),
    ("/tmp/palimpsest-evil.txt", tarfile.REGTYPE, "absolute path"),
    ("cifar-10-batches-py/link", tarfile.SYMTYPE, "a link"),
])
def test_tar_extraction_rejects_escaping_members(tmp_path, member_name, kind, reason):
    member = tarfile.TarInfo(member_name)
    member.type = kind
    if kind == tarfile.SYMTYPE:
        member.linkname = "/etc/passwd"
    archive = _tar_with(tmp_path / "evil.tar.gz", member)
    dest = tmp_path / "dest" / "inner"
    with pytest.raises(DataError, match=reason):
        extract_tar(archive, dest)
    with pytest.raises(DataError, match=reason):
        download_cifar(tmp_path / "dl", 10, url=archive.as_uri())
    assert not (tmp_path / "dest" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/palimpsest-evil.txt").exists()


# -------------------------------------------------------------------------------- Fashion-MNIST

def test_fashion_mnist_missing_files_error(tmp_path, monkeypatch):
    missing = tmp_path / "no-fashion-here"
    monkeypatch.setenv("PALIMPSEST_FASHION_MNIST", str(missing))
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist")
    text = str(info.value)
    for needle in ("apt-get install dataset-fashion-mnist", str(missing), "train-images-idx3-ubyte.gz",
                   "PALIMPSEST_FASHION_MNIST", "download=True"):
        assert needle in text

    monkeypatch.delenv("PALIMPSEST_FASHION_MNIST")
    monkeypatch.setattr(datasets, "DEBIAN_FASHION_MNIST", str(tmp_path / "debian"))
    monkeypatch.setenv("PALIMPSEST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist")
    assert str(tmp_path / "debian") in str(info.value) and str(tmp_path / "cache") in str(info.value)


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.delenv("PALIMPSEST_FASHION_MNIST", raising=False)
    data = load_dataset("fashion_mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.y_train.shape == (60000,) and data.y_test.shape == (10000,)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert np.bincount(data.y_train).tolist() == [6000] * 10
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert abs(float(data.x_train.mean())) < 1e-3
    assert load_dataset("fashion_mnist") is data  # decoded once per process


# ------------------------------------------------------------------------------ digits, MNIST-1D

def test_digits_split_is_stratified_and_fixed():
    data = load_dataset("digits")
    assert data.x_train.shape == (1437, 1, 8, 8) and data.x_test.shape == (360, 1, 8, 8)
    assert data.n_classes == 10 and data.x_train.dtype == np.float32
    fresh = datasets._digits.__wrapped__()
    np.testing.assert_array_equal(fresh.y_test, data.y_test)
    np.testing.assert_array_equal(fresh.x_train, data.x_train)
    share = np.bincount(data.y_test, minlength=10) / np.bincount(
        np.concatenate([data.y_train, data.y_test]), minlength=10)
    assert np.all(np.abs(share - 0.2) < 0.02)


def test_mnist1d_is_generated_once_then_read_from_cache(tmp_path, monkeypatch):
    first = load_dataset("mnist1d", root=tmp_path)
    assert (tmp_path / "mnist1d.npz").is_file() and first.source["from_cache"] is False
    assert first.x_train.shape == (4000, 40) and first.x_test.shape == (1000, 40)

    import mnist1d.data

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(mnist1d.data, "make_dataset", fail)
    second = load_dataset("mnist1d", root=tmp_path)
    assert second.source["from_cache"] is True
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)

    monkeypatch.setenv("PALIMPSEST_CACHE", str(tmp_path))
    assert load_dataset("mnist1d").source["from_cache"] is True  # default root is the cache folder


# ------------------------------------------------------------------------------------- registry

def test_dataset_info_and_lookup_errors():
    assert dataset_info("fashion_mnist") == (10, (1, 28, 28))
    assert dataset_info("cifar100") == (100, (3, 32, 32))
    assert dataset_info("mnist1d") == (10, (40,))
    assert dataset_info("npz") == (None, None)
    with pytest.raises(UnknownNameError, match="fashion_mnist"):
        dataset_info("fashion-mnist")
    with pytest.raises(ConfigError, match="rot") as info:
        load_dataset("digits", rot="x")
    assert "root" in str(info.value)
