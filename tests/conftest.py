import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def digits():
    from palimpsest.data.datasets import load_dataset
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_stream(digits):
    from palimpsest.data import class_incremental
    return class_incremental(digits, 5)


def tiny_spec(**over):
    """A spec that trains in about a second (digits, small MLP)."""
    spec = {"name": "tiny", "benchmark": {"dataset": "digits", "n_experiences": 5},
            "model": {"name": "mlp", "settings": {"hidden": [32]}},
            "training": {"epochs": 1, "batch_size": 32, "lr": 0.05},
            "strategies": ["naive"], "seeds": [0]}
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec
