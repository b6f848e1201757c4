from .base import ArrayDataset, standardise
from .scenarios import (Experience, Stream, class_incremental, domain_incremental, online, recurring,
                        task_incremental)

__all__ = ["ArrayDataset", "standardise", "Experience", "Stream", "class_incremental", "domain_incremental",
           "online", "recurring", "task_incremental"]
