"""Files of the results store: checkpoints (tensors in safetensors, everything else in JSON) and
arrays (numpy .npz), each written atomically (a temporary file, then a rename), so a file is
either whole or absent, never half-written.

Paths kept in the database are relative to the results root (`relative`/`absolute`), so a results
folder can be moved or copied and still opens.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure into {key: tensor} and a JSON skeleton that names those keys."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: Any, path: str) -> Any:
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(obj.items())]}
        if isinstance(obj, (list, tuple)):
            return {"__list__" if isinstance(obj, list) else "__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot checkpoint a value of type {type(obj).__name__} at {path or 'top level'}")

    return tensors, walk(state, prefix)


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    def walk(obj: Any) -> Any:
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            if "__dict__" in obj:
                return {walk(k): walk(v) for k, v in obj["__dict__"]}
            if "__list__" in obj:
                return [walk(v) for v in obj["__list__"]]
            if "__tuple__" in obj:
                return tuple(walk(v) for v in obj["__tuple__"])
        return obj

    return walk(skeleton)


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(tmp_path)`, then rename the temporary file to `path` (same folder, so the rename
    is atomic): readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested state (e.g. {"model": ..., "optimizer": ..., "strategy": ...}) as
    `path` (safetensors) + `path.json`; both appear whole or not at all."""
    path = Path(path)
    tensors, skeleton = flatten_state(state, "s")
    # safetensors refuses tensors that share memory; clone views so each key owns its storage.
    tensors = {k: v.clone() for k, v in tensors.items()}
    atomic_write(path.with_suffix(path.suffix + ".json"), lambda tmp: Path(tmp).write_text(json.dumps(skeleton)))
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    skeleton = json.loads(path.with_suffix(path.suffix + ".json").read_text())
    return unflatten_state(load_file(str(path)), skeleton)


def save_arrays(path: str | Path, compress: bool = True, **arrays: np.ndarray) -> Path:
    """Arrays as one .npz file, written atomically (compressed by default: label arrays shrink ~5x)."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, write)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(Path(path), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def relative(root: Path, path: str | Path) -> str:
    """`path` relative to the results root, with forward slashes (what the database stores)."""
    return Path(os.path.relpath(Path(path).resolve(), root.resolve())).as_posix()


def absolute(root: Path, stored: str | None) -> Path | None:
    """A path stored in the database, resolved against the results root."""
    if stored is None:
        return None
    p = Path(stored)
    return p if p.is_absolute() else root / p


__all__ = ["absolute", "atomic_write", "flatten_state", "load_arrays", "load_state", "relative", "save_arrays",
           "save_state", "unflatten_state"]
