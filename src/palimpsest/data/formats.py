"""Readers and writers for the on-disk formats the standard datasets ship in.

- IDX (MNIST, Fashion-MNIST): `read_idx` / `write_idx`, raw or gzip, told apart by magic number.
- CIFAR-10/100 "python version" pickles: `read_cifar` / `write_cifar`, same layout as the
  official archives (bytes keys, uint8 rows of 3072 channel-major pixels).
- `.npz` with x_train, y_train, x_test, y_test (+ optional class_names): `read_npz` / `write_npz`.
- Downloads for machines with internet: `download`, `download_mnist_like`, `download_cifar`.
  Nothing here touches the network unless one of these three is called.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

import numpy as np

from ..core.errors import DataError

PathLike = str | os.PathLike

# ---------------------------------------------------------------------------------------- IDX

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"file not found: {path}", expected="an existing file", got=str(path),
                        fix="check the path, or pass download=True to the dataset loader") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path} starts like a gzip file but does not decompress",
                            expected="a complete .gz file", got=str(exc),
                            fix="the file is probably truncated; delete it and download it again") from None
    return raw


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a native-endian numpy array.

    Gzip is recognised by its magic bytes, not the file name, so a decompressed file that kept
    its `.gz` name still loads. Dimensions are big-endian uint32, as the format specifies.
    """
    path = Path(path)
    data = _read_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file",
                        expected="magic number 0x0000TTDD (two zero bytes, a type byte, a rank byte)",
                        got=f"first bytes {data[:4].hex() or '(empty file)'}",
                        fix="point at the MNIST-style *-ubyte or *-ubyte.gz files")
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX element type 0x{type_code:02X}",
                        expected="one of " + ", ".join(f"0x{c:02X}" for c in IDX_DTYPES),
                        got=f"0x{type_code:02X}", fix="the file is corrupt or not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: IDX header cut short", expected=f"{header} header bytes for rank {ndim}",
                        got=f"{len(data)} bytes", fix="the file is truncated; fetch it again")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected_bytes:
        raise DataError(f"{path}: IDX body has the wrong size",
                        expected=f"{expected_bytes} bytes for shape {shape} of {dtype.name}",
                        got=f"{len(data) - header} bytes",
                        fix="the file is truncated or corrupt; fetch it again")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def write_idx(path: PathLike, array: np.ndarray) -> Path:
    """Write `array` as an IDX file; gzip-compressed when `path` ends in `.gz`.

    Supported dtypes are the IDX ones: uint8, int8, int16, int32, float32, float64.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DataError(f"cannot write dtype {array.dtype} as IDX",
                        expected="uint8, int8, int16, int32, float32 or float64",
                        got=str(array.dtype), fix="cast first, e.g. array.astype(np.int32)")
    if array.ndim > 255 or array.ndim == 0:
        raise DataError("cannot write this rank as IDX", expected="1 to 255 dimensions",
                        got=f"shape {array.shape}", fix="reshape the array")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        # mtime=0 keeps the bytes identical for identical arrays
        _atomic_write(path, gzip.compress(header + body, mtime=0))
    else:
        _atomic_write(path, header + body)
    return path


def _atomic_write(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -------------------------------------------------------------------------------------- CIFAR

CIFAR_LAYOUT = {
    10: {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
         "test": ["test_batch"], "meta": "batches.meta", "labels": "labels", "names": "label_names",
         "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
         "md5": "c58f30108f718f92721af3b95e74349a"},
    100: {"folder": "cifar-100-python", "train": ["train"], "test": ["test"], "meta": "meta",
          "labels": "fine_labels", "names": "fine_label_names",
          "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
          "md5": "eb9058c3a382ffc7106e4002c42a8d85"},
}


def _cifar_layout(variant: int) -> dict:
    if variant not in CIFAR_LAYOUT:
        raise DataError("unknown CIFAR variant", expected="10 or 100", got=variant,
                        fix="pass variant=10 or variant=100")
    return CIFAR_LAYOUT[variant]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a pickle can run any code it names,
    so a downloaded batch file is allowed to name nothing but numpy's array rebuilders."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"),
                # protocol-2 pickles written by Python 3 spell every bytes object as encode(str)
                ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self._ALLOWED:
            raise DataError("CIFAR batch file refers to a Python object that is not a numpy array",
                            expected="a pickle of dicts, lists and numpy arrays (the official layout)",
                            got=f"{module}.{name}",
                            fix="use the official CIFAR archive, or convert your data to .npz and "
                                "load it with the 'npz' dataset")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module[len("numpy.core."):]  # numpy>=2 warns on numpy.core
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as handle:
            obj = _ArrayUnpickler(handle, encoding="bytes").load()
    except DataError:
        raise
    except Exception as exc:  # a truncated or foreign file raises many different errors
        raise DataError(f"could not read CIFAR batch file {path}",
                        expected="a pickled dict as in the official CIFAR python archive",
                        got=f"{type(exc).__name__}: {exc}",
                        fix="delete the folder and extract the official archive again") from None
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR batch file {path} does not hold a dict", expected="dict",
                        got=type(obj).__name__, fix="use the official CIFAR python archive")
    # the official files use bytes keys; accept str keys too (files re-pickled under Python 3)
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path):  # noqa: ANN202
    if key not in batch:
        raise DataError(f"CIFAR file {path} has no {key!r} entry", expected=f"a dict with key {key!r}",
                        got=f"keys {sorted(batch)}", fix="check the variant (10 or 100) matches the files")
    return batch[key]


def find_cifar_dir(root: PathLike, variant: int = 10) -> Path | None:
    """The folder under `root` that holds all CIFAR files (root itself or its official subfolder)."""
    layout = _cifar_layout(variant)
    needed = layout["train"] + layout["test"] + [layout["meta"]]
    for folder in (Path(root), Path(root) / layout["folder"]):
        if all((folder / name).is_file() for name in needed):
            return folder
    return None


def read_cifar(root: PathLike, variant: int = 10
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read the CIFAR-10/100 python pickles under `root` (or `root/cifar-10-batches-py` etc.).

    Returns (x_train uint8 (N,3,32,32), y_train int64, x_test, y_test, class_names). CIFAR-100
    uses its 100 fine labels. From "Learning Multiple Layers of Features from Tiny Images"
    (Krizhevsky, 2009).
    """
    layout = _cifar_layout(variant)
    folder = find_cifar_dir(root, variant)
    if folder is None:
        needed = layout["train"] + layout["test"] + [layout["meta"]]
        raise DataError(f"CIFAR-{variant} files not found under {root}",
                        expected=f"{', '.join(needed)} in {root} or {Path(root) / layout['folder']}",
                        got=f"missing: {', '.join(_missing(Path(root), layout['folder'], needed))}",
                        fix=f"download {layout['url']} and extract it into {root}, or pass download=True "
                            "to the loader on a machine with internet")

    def split(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            path = folder / name
            batch = _unpickle(path)
            data = np.asarray(_field(batch, "data", path))
            labels = np.asarray(_field(batch, layout["labels"], path), dtype=np.int64)
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
                raise DataError(f"CIFAR file {path} has malformed data",
                                expected="uint8 rows of 3072 values, one label per row",
                                got=f"data {data.dtype} {data.shape}, {len(labels)} labels",
                                fix="extract the official archive again")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(labels)
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = split(layout["train"])
    x_test, y_test = split(layout["test"])
    meta_path = folder / layout["meta"]
    names = _field(_unpickle(meta_path), layout["names"], meta_path)
    class_names = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    return x_train, y_train, x_test, y_test, class_names


def _missing(root: Path, subfolder: str, needed: list[str]) -> list[str]:
    return [n for n in needed if not (root / n).is_file() and not (root / subfolder / n).is_file()]


def write_cifar(root: PathLike, variant: int, x_train: np.ndarray, y_train: np.ndarray,
                x_test: np.ndarray, y_test: np.ndarray, class_names: Iterable[str]) -> Path:
    """Write arrays in the official CIFAR python layout under `root/<official folder>`.

    Images are uint8 shaped (N,3,32,32) or (N,3072); CIFAR-10 training data is split into the five
    `data_batch_*` files. Returns the folder written. Used by tests and to repackage data.
    """
    layout = _cifar_layout(variant)
    folder = Path(root) / layout["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    names = [str(n) for n in class_names]

    def rows(x: np.ndarray, y: np.ndarray, which: str) -> tuple[np.ndarray, list[int]]:
        x, y = np.asarray(x), np.asarray(y)
        if x.dtype != np.uint8 or x.shape[1:] not in ((3, 32, 32), (3072,)) or len(x) != len(y):
            raise DataError(f"write_cifar: bad {which} arrays",
                            expected="uint8 images shaped (N,3,32,32) or (N,3072) and N labels",
                            got=f"x {x.dtype} {x.shape}, y {y.shape}",
                            fix="convert with x.astype(np.uint8) and check the shapes")
        if len(y) and (y.min() < 0 or y.max() >= len(names)):
            raise DataError(f"write_cifar: {which} labels out of range",
                            expected=f"ids in [0, {len(names)})", got=f"min {y.min()}, max {y.max()}",
                            fix="pass one class name per class")
        return np.ascontiguousarray(x.reshape(len(x), 3072)), [int(v) for v in y]

    def dump(name: str, obj: dict) -> None:
        buffer = io.BytesIO()
        pickle.dump(obj, buffer, protocol=2)
        _atomic_write(folder / name, buffer.getvalue())

    xtr, ytr = rows(x_train, y_train, "train")
    xte, yte = rows(x_test, y_test, "test")
    encoded = [n.encode("utf-8") for n in names]
    if variant == 10:
        chunks = np.array_split(np.arange(len(ytr)), len(layout["train"]))
        for i, (name, idx) in enumerate(zip(layout["train"], chunks), start=1):
            dump(name, {b"batch_label": f"training batch {i} of 5".encode(), b"labels": [ytr[j] for j in idx],
                        b"data": xtr[idx], b"filenames": [f"{j}.png".encode() for j in idx]})
        dump("test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": yte, b"data": xte,
                            b"filenames": [f"{j}.png".encode() for j in range(len(yte))]})
        dump("batches.meta", {b"num_cases_per_batch": int(chunks[0].size) if chunks else 0,
                              b"label_names": encoded, b"num_vis": 3072})
    else:
        for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            dump(name, {b"batch_label": name.encode(), b"fine_labels": y, b"data": x,
                        b"filenames": [f"{j}.png".encode() for j in range(len(y))]})
        dump("meta", {b"fine_label_names": encoded, b"coarse_label_names": []})
    return folder


# ---------------------------------------------------------------------------------------- npz

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: PathLike
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...] | None]:
    """Read x_train, y_train, x_test, y_test and optional class_names from an `.npz` file.

    Returns the arrays as stored and `class_names` as a tuple of str, or None when absent.
    Pickled object arrays are refused (np.load with allow_pickle=False).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"npz file not found: {path}", expected="an existing .npz file",
                        got=str(path), fix="check the path (np.savez(path, x_train=..., y_train=..., "
                                           "x_test=..., y_test=...) writes one)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}",
                                expected=f"arrays named {', '.join(NPZ_KEYS)} (class_names optional)",
                                got=f"keys {sorted(archive.files)}",
                                fix="save with np.savez(path, x_train=..., y_train=..., x_test=..., "
                                    "y_test=..., class_names=...)")
            arrays = tuple(archive[k] for k in NPZ_KEYS)
            names = tuple(str(n) for n in archive["class_names"]) if "class_names" in archive.files else None
    except DataError:
        raise
    except Exception as exc:  # zip errors, pickled object arrays, truncation
        raise DataError(f"could not read {path} as .npz", expected="a file written by np.savez",
                        got=f"{type(exc).__name__}: {exc}",
                        fix="write it again with np.savez, using plain numeric arrays and a str array of "
                            "class names") from None
    return (*arrays, names)  # type: ignore[return-value]


def write_npz(path: PathLike, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
              y_test: np.ndarray, class_names: Iterable[str] | None = None) -> Path:
    """Write the layout `read_npz` reads, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(n) for n in class_names], dtype=str)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    _atomic_write(path, buffer.getvalue())
    return path


# ---------------------------------------------------------------------------------- downloads

def md5sum(path: PathLike, block: int = 1 << 20) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: PathLike, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch `url` to `dest` and return `dest`.

    The bytes go to a temporary file next to `dest` that is renamed only once complete and (when
    `md5` is given) verified, so an interrupted download never leaves a half file under the real
    name. An existing `dest` whose md5 matches (or any existing `dest` when `md5` is None) is kept.
    """
    dest = Path(dest)
    if dest.is_file() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DataError(f"could not download {url}", expected="a reachable URL",
                            got=f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}",
                            fix=f"this machine may be offline; fetch {url} on a machine with internet "
                                f"and place the file at {dest} by hand") from None
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(f"checksum mismatch for {url}", expected=f"md5 {md5}",
                            got=f"md5 {digest.hexdigest()}",
                            fix=f"the download was corrupted or the file changed upstream; retry, or "
                                f"place a good copy at {dest} by hand")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def download_mnist_like(root: PathLike, base_url: str,
                        files: Iterable[str] | Mapping[str, str | None]) -> list[Path]:
    """Download MNIST-style files (`base_url` + name) into `root`; `files` may map name -> md5.

    Files already present are kept. Returns the local paths in the order given.
    """
    checks = dict(files) if isinstance(files, Mapping) else {name: None for name in files}
    base = base_url if base_url.endswith("/") else base_url + "/"
    return [download(base + name, Path(root) / name, md5) for name, md5 in checks.items()]


def extract_tar(archive: PathLike, dest: PathLike) -> Path:
    """Extract a tar archive into `dest`, refusing any member that could land outside it.

    Absolute paths, `..` components, links and device files are rejected before anything is
    written (a crafted archive could otherwise overwrite arbitrary files).
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                parts = PurePosixPath(member.name).parts
                bad = ("an absolute path" if member.name.startswith(("/", "\\")) or
                       (len(member.name) > 1 and member.name[1] == ":") else
                       "a '..' component" if ".." in parts else
                       "a link" if member.issym() or member.islnk() else
                       "a special file" if not (member.isfile() or member.isdir()) else None)
                if bad:
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} has {bad}",
                                    expected="regular files and folders with relative paths inside the "
                                             "archive", got=member.name,
                                    fix="the archive is not the official one; delete it and download it "
                                        "again from the official URL")
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second, independent guard
                tar.extractall(dest, members=members, filter="data")
            else:
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"could not read archive {archive}", expected="a complete .tar.gz file",
                        got=f"{type(exc).__name__}: {exc}",
                        fix="the archive is probably truncated; delete it and download it again") from None
    return dest


def download_cifar(root: PathLike, variant: int = 10, url: str | None = None,
                   md5: str | None = None) -> Path:
    """Download and extract CIFAR-10/100 into `root`; returns the folder holding the batches.

    `url` defaults to the official archive (then `md5` defaults to its published checksum); pass
    a mirror or a `file://` URL to use another copy. An already extracted copy is reused.
    """
    layout = _cifar_layout(variant)
    found = find_cifar_dir(root, variant)
    if found is not None:
        return found
    if url is None:
        url, md5 = layout["url"], md5 or layout["md5"]
    archive = download(url, Path(root) / Path(layout["url"]).name, md5)
    extract_tar(archive, root)
    found = find_cifar_dir(root, variant)
    if found is None:
        raise DataError(f"{archive} did not contain the CIFAR-{variant} files",
                        expected=f"{layout['folder']}/ with the batch files", got=f"archive from {url}",
                        fix="check that the URL points at the CIFAR python version archive")
    return found


__all__ = ["IDX_DTYPES", "CIFAR_LAYOUT", "NPZ_KEYS", "read_idx", "write_idx", "find_cifar_dir",
           "read_cifar", "write_cifar", "read_npz", "write_npz", "md5sum", "download",
           "download_mnist_like", "extract_tar", "download_cifar"]
