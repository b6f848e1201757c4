"""Checkpoints: tensors in safetensors, everything else in JSON; written atomically."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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


def _atomic_write(path: Path, write) -> None:
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


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Save a nested state (e.g. {"model": ..., "optimizer": ..., "strategy": ...}) as
    `path` (safetensors) + `path.json`; both appear whole or not at all."""
    path = Path(path)
    tensors, skeleton = flatten_state(state, "s")
    # safetensors refuses tensors that share memory; clone views so each key owns its storage.
    tensors = {k: v.clone() for k, v in tensors.items()}
    _atomic_write(path.with_suffix(path.suffix + ".json"), lambda tmp: Path(tmp).write_text(json.dumps(skeleton)))
    _atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    skeleton = json.loads(path.with_suffix(path.suffix + ".json").read_text())
    return unflatten_state(load_file(str(path)), skeleton)
