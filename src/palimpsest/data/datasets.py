"""Registered dataset loaders: `load_dataset("fashion_mnist")` -> ArrayDataset.

Every loader has the form `loader(root=None, **kwargs) -> ArrayDataset`: pixels scaled to [0, 1],
then standardised by the training mean and standard deviation (`standardise`), float32 inputs
shaped (N, *input_shape), int64 labels. Nothing is downloaded unless `download=True` is passed;
when files are missing the error says which, where it looked and how to get them.

Environment variables: PALIMPSEST_FASHION_MNIST, PALIMPSEST_MNIST, PALIMPSEST_CIFAR10,
PALIMPSEST_CIFAR100 (data folders) and PALIMPSEST_CACHE (downloads and generated data;
default ~/.cache/palimpsest).
"""
from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError, DataError
from ..core.registry import DATASETS
from .base import ArrayDataset, standardise
from .formats import (CIFAR_LAYOUT, download_cifar, download_mnist_like, extract_tar, find_cifar_dir,
                      read_cifar, read_idx, read_npz, write_npz)

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# Class names that reports can show without loading the data (digits' names are their labels).
KNOWN_CLASS_NAMES: dict[str, tuple[str, ...]] = {"fashion_mnist": FASHION_MNIST_CLASSES, "cifar10": CIFAR10_CLASSES}

# IDX file names shared by MNIST and Fashion-MNIST; either the .gz or the decompressed file will do.
IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_MD5 = {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                     "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                     "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                     "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def cache_dir() -> Path:
    """Where downloads and generated datasets go: $PALIMPSEST_CACHE or ~/.cache/palimpsest."""
    return Path(os.environ.get("PALIMPSEST_CACHE") or Path.home() / ".cache" / "palimpsest")


def _scaled(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            class_names: tuple[str, ...], pixel_max: float | None, source: dict,
            standardize: bool = True) -> ArrayDataset:
    x_train = x_train.astype(np.float32)
    x_test = x_test.astype(np.float32)
    if pixel_max is not None:
        x_train /= pixel_max
        x_test /= pixel_max
    if standardize:
        x_train, x_test = standardise(x_train, x_test)
    source = dict(source, standardized=standardize)
    return ArrayDataset(name, x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64),
                        tuple(class_names), source)


def _files_signature(paths: list[Path]) -> tuple:
    """(path, size, mtime) per file: the in-process caches are keyed on it, so a replaced file is
    read again while an unchanged one is decoded once per process."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)


# ------------------------------------------------------------------------------ MNIST-like (IDX)

def _idx_paths(folder: Path) -> tuple[dict[str, Path], list[str]]:
    found, missing = {}, []
    for key, base in IDX_FILES.items():
        for candidate in (folder / f"{base}.gz", folder / base):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{base}.gz")
    return found, missing


@functools.lru_cache(maxsize=4)
def _idx_dataset(name: str, title: str, class_names: tuple[str, ...], signature: tuple,
                 standardize: bool = True) -> ArrayDataset:
    """Decoded, scaled and standardised once per process (about 2 s for 70000 images; a cache hit
    is free): ArrayDataset is treated as read-only, so every caller may share the arrays."""
    paths = [Path(entry[0]) for entry in signature]
    train_images, train_labels, test_images, test_labels = (read_idx(p) for p in paths)
    for split, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1:
            raise DataError(f"{title} {split} files in {paths[0].parent} have unexpected shapes",
                            expected="images (N, 28, 28) and labels (N,)",
                            got=f"images {images.shape}, labels {labels.shape}",
                            fix="check that the folder holds the right IDX files")
    return _scaled(name, train_images[:, None], train_labels, test_images[:, None], test_labels,
                   class_names, 255.0, {"loader": name, "root": str(paths[0].parent),
                                        "files": [p.name for p in paths]}, standardize)


def _load_idx_dataset(name: str, title: str, root: str | os.PathLike | None, download: bool,
                      env_var: str, default_roots: list[Path], base_url: str, md5s: dict[str, str],
                      class_names: tuple[str, ...], install_hint: str, standardize: bool = True) -> ArrayDataset:
    given = root if root is not None else os.environ.get(env_var) or None
    roots = [Path(given)] if given is not None else default_roots
    looked = []
    folder = None
    for candidate in roots:
        found, missing = _idx_paths(candidate)
        if not missing:
            folder = candidate
            break
        looked.append(f"{candidate} (missing {', '.join(missing)})")
    if folder is None and download:
        # with no folder named, download into the cache (the system folder is usually read-only)
        folder = roots[0] if given is not None else cache_dir() / name
        download_mnist_like(folder, base_url, md5s)
        found, missing = _idx_paths(folder)
    if folder is None:
        raise DataError(
            f"{title} files not found",
            expected=f"{', '.join(f'{b}.gz' for b in IDX_FILES.values())} (or the same without .gz) "
                     "in one folder",
            got="looked in " + "; ".join(looked),
            fix=f"{install_hint}set {env_var}=/path/to/folder or pass root=...; or pass download=True "
                f"on a machine with internet (fetches from {base_url})")
    return _idx_dataset(name, title, class_names, _files_signature([found[k] for k in IDX_FILES]), standardize)


@DATASETS.register("fashion_mnist", n_classes=10, input_shape=(1, 28, 28))
def load_fashion_mnist(root: str | os.PathLike | None = None, download: bool = False,
                       standardize: bool = True) -> ArrayDataset:
    """Fashion-MNIST: 60000/10000 grey 28x28 clothing images, 10 classes.

    From "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning Algorithms"
    (Xiao, Rasul and Vollgraf, 2017). Looks in `root`, else $PALIMPSEST_FASHION_MNIST, else the
    Debian package's folder /usr/share/datasets/fashion-mnist, else the download cache.
    """
    return _load_idx_dataset(
        "fashion_mnist", "Fashion-MNIST", root, download, "PALIMPSEST_FASHION_MNIST",
        [Path(DEBIAN_FASHION_MNIST), cache_dir() / "fashion_mnist"], FASHION_MNIST_URL,
        FASHION_MNIST_MD5, FASHION_MNIST_CLASSES,
        f"`apt-get install dataset-fashion-mnist` (installs them in {DEBIAN_FASHION_MNIST}); or ", standardize)


@DATASETS.register("mnist", n_classes=10, input_shape=(1, 28, 28))
def load_mnist(root: str | os.PathLike | None = None, download: bool = False, standardize: bool = True) -> ArrayDataset:
    """MNIST handwritten digits: 60000/10000 grey 28x28 images, 10 classes.

    From "Gradient-based learning applied to document recognition" (LeCun et al., 1998). Looks in
    `root`, else $PALIMPSEST_MNIST, else the download cache.
    """
    return _load_idx_dataset("mnist", "MNIST", root, download, "PALIMPSEST_MNIST",
                             [cache_dir() / "mnist"], MNIST_URL, MNIST_MD5, DIGIT_CLASSES,
                             "place the four IDX files in a folder and ", standardize)


# ------------------------------------------------------------------------------------ digits

@functools.lru_cache(maxsize=2)
def _digits(standardize: bool = True) -> ArrayDataset:
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    images = bunch.images.reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels,
                                           random_state=0)
    return _scaled("digits", images[train_idx], labels[train_idx], images[test_idx], labels[test_idx],
                   DIGIT_CLASSES, 16.0, {"loader": "digits", "origin": "sklearn.datasets.load_digits",
                                         "split": "stratified 80/20, random_state=0"}, standardize)


@DATASETS.register("digits", n_classes=10, input_shape=(1, 8, 8))
def load_digits(root: str | os.PathLike | None = None, standardize: bool = True) -> ArrayDataset:
    """UCI optical digits bundled with scikit-learn: 1797 grey 8x8 images, 10 classes.

    A fixed stratified 80/20 train/test split (seed 0); `root` is ignored (the data ships with
    scikit-learn). From "Optical Recognition of Handwritten Digits" (Alpaydin and Kaynak, 1998).
    """
    return _digits(standardize)


# ----------------------------------------------------------------------------------- MNIST-1D

@DATASETS.register("mnist1d", n_classes=10, input_shape=(40,))
def load_mnist1d(root: str | os.PathLike | None = None, regenerate: bool = False,
                 standardize: bool = True) -> ArrayDataset:
    """MNIST-1D: 4000/1000 procedurally generated 1D signals of length 40, 10 classes.

    From "Scaling Down Deep Learning with MNIST-1D" (Greydanus and Kobak, 2020/2024). Generated
    once with the package's default arguments and cached as `mnist1d.npz` under `root` (default
    $PALIMPSEST_CACHE or ~/.cache/palimpsest); later calls read the cache.
    """
    path = Path(root if root is not None else cache_dir()) / "mnist1d.npz"
    arrays = None
    if path.is_file() and not regenerate:
        try:
            arrays = read_npz(path)[:4]
        except DataError:
            arrays = None  # a damaged cache is rebuilt, never trusted
    from_cache = arrays is not None
    if arrays is None:
        from mnist1d.data import get_dataset_args, make_dataset

        data = make_dataset(get_dataset_args())
        arrays = (data["x"].astype(np.float32), data["y"].astype(np.int64),
                  data["x_test"].astype(np.float32), data["y_test"].astype(np.int64))
        write_npz(path, *arrays, class_names=DIGIT_CLASSES)
    return _scaled("mnist1d", *arrays, DIGIT_CLASSES, None,
                   {"loader": "mnist1d", "path": str(path), "from_cache": from_cache,
                    "generator": "mnist1d.data.make_dataset(get_dataset_args())"}, standardize)


# -------------------------------------------------------------------------------------- CIFAR

@functools.lru_cache(maxsize=2)  # the uint8 arrays only: float copies of CIFAR are 0.7 GB each
def _decoded_cifar(signature: tuple, folder: str, variant: int) -> tuple:
    return read_cifar(folder, variant)


def _load_cifar(variant: int, root: str | os.PathLike | None, download: bool, standardize: bool = True) -> ArrayDataset:
    name, env_var = f"cifar{variant}", f"PALIMPSEST_CIFAR{variant}"
    layout = CIFAR_LAYOUT[variant]
    given = root if root is not None else os.environ.get(env_var) or None
    if given is None and not download:
        raise DataError(f"CIFAR-{variant} needs a data folder", expected="root=<folder> or download=True",
                        got="no root, and $" + env_var + " is not set",
                        fix=f"pass root= a folder holding {layout['folder']}/ (extracted from "
                            f"{layout['url']}), set {env_var}, or pass download=True on a machine with "
                            "internet")
    folder_root = Path(given) if given is not None else cache_dir() / name
    folder = find_cifar_dir(folder_root, variant)
    archive = folder_root / Path(layout["url"]).name
    if folder is None and archive.is_file():  # archive placed by hand but not yet extracted
        extract_tar(archive, folder_root)
        folder = find_cifar_dir(folder_root, variant)
    if folder is None and download:
        folder = download_cifar(folder_root, variant)
    if folder is None:
        read_cifar(folder_root, variant)  # raises the DataError that lists the missing files
        raise AssertionError("unreachable: read_cifar found no files yet did not raise")
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    x_train, y_train, x_test, y_test, class_names = _decoded_cifar(_files_signature(paths), str(folder),
                                                                   variant)
    if len(class_names) != variant:
        raise DataError(f"CIFAR-{variant} metadata in {folder} lists {len(class_names)} class names",
                        expected=f"{variant} names", got=len(class_names),
                        fix="check that variant matches the files (cifar10 vs cifar100)")
    return _scaled(name, x_train, y_train, x_test, y_test, class_names, 255.0,
                   {"loader": name, "root": str(folder)}, standardize)


@DATASETS.register("cifar10", n_classes=10, input_shape=(3, 32, 32))
def load_cifar10(root: str | os.PathLike | None = None, download: bool = False,
                 standardize: bool = True) -> ArrayDataset:
    """CIFAR-10: 50000/10000 colour 32x32 images, 10 classes.

    From "Learning Multiple Layers of Features from Tiny Images" (Krizhevsky, 2009). `root` holds
    the python-version batches (directly or in cifar-10-batches-py/), or the .tar.gz to extract.
    """
    return _load_cifar(10, root, download, standardize)


@DATASETS.register("cifar100", n_classes=100, input_shape=(3, 32, 32))
def load_cifar100(root: str | os.PathLike | None = None, download: bool = False,
                  standardize: bool = True) -> ArrayDataset:
    """CIFAR-100: 50000/10000 colour 32x32 images, 100 fine classes.

    From "Learning Multiple Layers of Features from Tiny Images" (Krizhevsky, 2009). `root` holds
    the python-version files (directly or in cifar-100-python/), or the .tar.gz to extract.
    """
    return _load_cifar(100, root, download, standardize)


# ---------------------------------------------------------------------------------------- npz

@DATASETS.register("npz")
def load_npz(root: str | os.PathLike | None = None, path: str | os.PathLike | None = None,
             standardize: bool = True, remap_labels: bool = False, scale: bool | None = None) -> ArrayDataset:
    """Your own arrays from an .npz file with x_train, y_train, x_test, y_test (+ class_names).

    `path` (or `root`) names the file (`benchmark: {dataset: npz, root: my_data.npz}`). uint8 inputs are
    taken as pixels and divided by 255; with `standardize` (default) inputs are then scaled by the
    training mean and standard deviation. Labels must be the class ids 0..K-1 (every id used by some
    example); labels such as 1..10 are refused unless `remap_labels` maps the sorted label values to
    0..K-1 (their values become the class names). Class names default to "0".."K-1". (`scale` is the
    old name of `standardize`.)
    """
    file = path if path is not None else root
    if file is None:
        raise ConfigError("the npz dataset needs a file", expected="path='my_data.npz'", got="no path",
                          fix="pass path= the .npz file holding x_train, y_train, x_test, y_test")
    standardize = standardize if scale is None else scale
    x_train, y_train, x_test, y_test, names = read_npz(file)
    for key, y in (("y_train", y_train), ("y_test", y_test)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{file}: {key} must be integer class ids",
                            expected="a 1-D integer array", got=f"{y.dtype} {y.shape}",
                            fix=f"save {key}=labels.astype(np.int64)")
    if x_train.ndim < 2 or x_test.ndim < 2:
        raise DataError(f"{file}: inputs need a batch axis", expected="x shaped (N, *input_shape)",
                        got=f"x_train {x_train.shape}, x_test {x_test.shape}", fix="reshape to (N, ...)")
    values = np.unique(np.concatenate([y_train, y_test]))
    if remap_labels:
        lookup = {int(v): i for i, v in enumerate(values)}
        y_train = np.array([lookup[int(v)] for v in y_train], dtype=np.int64)
        y_test = np.array([lookup[int(v)] for v in y_test], dtype=np.int64)
        names = tuple(str(int(v)) for v in values) if names is None else names
    elif names is None and len(values) and not np.array_equal(values, np.arange(len(values))):
        shown = values[:12].tolist()
        raise DataError(f"{file}: labels are not the class ids 0..K-1",
                        expected=f"every id in 0..{len(values) - 1} (that many distinct labels)",
                        got=f"the label values {shown}{' ...' if len(values) > 12 else ''}",
                        fix="save the labels as 0..K-1, or set the dataset option remap_labels: true "
                            "(benchmark: {dataset: npz, root: FILE, options: {remap_labels: true}}) to map the sorted "
                            "values to 0..K-1")
    if names is None:
        names = tuple(str(i) for i in range(len(values)))
    pixel_max = 255.0 if x_train.dtype == np.uint8 else None
    source = {"loader": "npz", "path": str(file), "remapped_labels": bool(remap_labels)}
    return _scaled("npz", x_train, y_train, x_test, y_test, names, pixel_max, source, standardize)


# ------------------------------------------------------------------------------------- lookup

def dataset_info(name: str) -> tuple[int | None, tuple[int, ...] | None]:
    """(n_classes, input_shape) of a registered dataset without loading it; None where the
    registry does not know (e.g. `npz`, whose shape comes from the file)."""
    meta = DATASETS.get(name).meta
    shape = meta.get("input_shape")
    return meta.get("n_classes"), tuple(shape) if shape is not None else None


def load_dataset(name: str, **kwargs) -> ArrayDataset:
    """Load a registered dataset by name, e.g. `load_dataset("mnist", root="data/mnist")`.

    Unknown names list close matches; unknown keyword arguments list the accepted ones.
    """
    loader = DATASETS.get(name).obj
    accepted = inspect.signature(loader).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"dataset {name!r} does not take {', '.join(unknown)}",
                          expected=f"keyword arguments among: {', '.join(accepted)}",
                          got=", ".join(f"{k}={kwargs[k]!r}" for k in unknown),
                          fix="drop or rename the argument")
    dataset = loader(**kwargs)
    n_classes, input_shape = dataset_info(name)
    if (n_classes is not None and dataset.n_classes != n_classes) or \
            (input_shape is not None and dataset.input_shape != input_shape):
        raise DataError(f"dataset {name!r} loaded with an unexpected form",
                        expected=f"{n_classes} classes, inputs {input_shape}",
                        got=f"{dataset.n_classes} classes, inputs {dataset.input_shape}",
                        fix="check that the files are the ones this dataset expects")
    return dataset


__all__ = ["FASHION_MNIST_CLASSES", "DIGIT_CLASSES", "IDX_FILES", "cache_dir", "load_fashion_mnist",
           "load_mnist", "load_digits", "load_mnist1d", "load_cifar10", "load_cifar100", "load_npz",
           "dataset_info", "load_dataset"]
