from . import datasets  # noqa: F401  (registers the loaders)
from .base import ArrayDataset, standardise
from .batch import Batch, LabelFreeBatch
from .datasets import load_dataset
from .scenarios import (Experience, Stream, TensorSource, class_incremental, domain_incremental, merge, online,
                        recurring, task_incremental)

__all__ = ["load_dataset", "ArrayDataset", "standardise", "Batch", "LabelFreeBatch", "Experience", "Stream",
           "TensorSource", "class_incremental", "domain_incremental", "merge", "online", "recurring",
           "task_incremental"]
