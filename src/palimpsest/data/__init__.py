from . import datasets  # noqa: F401  (registers the loaders)
from .base import ArrayDataset, standardise
from .datasets import load_dataset
from .scenarios import (Experience, Stream, class_incremental, domain_incremental, online, recurring,
                        task_incremental)

__all__ = ["load_dataset", "ArrayDataset", "standardise", "Experience", "Stream", "class_incremental", "domain_incremental",
           "online", "recurring", "task_incremental"]
