"""The optimisation layer below learn/ and forget/: one loop, optimizer and schedule factories,
shared losses, frozen snapshots and the one implementation of diagonal parameter importance."""
from .batching import Cycle, n_batches, paired_batches, shuffled_batches, union_batches
from .config import TrainingConfig, build_optimizer, schedule_factor
from .fit import StepStats, fit
from .importance import DiagonalFisher, DiagonalImportance, batch_importance, diagonal_fisher, per_example_importance
from .loop import LoopStats, LossHooks, StepHooks, run_loop
from .losses import masked_cross_entropy, shifted_cross_entropy, softened_kl
from .snapshot import frozen_copy, frozen_digest, frozen_names, trainable_state

__all__ = ["Cycle", "n_batches", "paired_batches", "shuffled_batches", "union_batches", "TrainingConfig",
           "build_optimizer", "schedule_factor", "StepStats", "fit", "DiagonalFisher", "DiagonalImportance", "batch_importance",
           "diagonal_fisher", "per_example_importance", "LoopStats", "LossHooks", "StepHooks", "run_loop",
           "masked_cross_entropy", "shifted_cross_entropy", "softened_kl", "frozen_copy", "frozen_digest",
           "frozen_names", "trainable_state"]
