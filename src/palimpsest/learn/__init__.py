"""Continual-learning strategies. Importing this package registers every built-in strategy."""
from . import (agem, cumulative, der, er, er_ace, ewc, from_scratch, gdumb, icarl, joint, l2, lwf, mas,  # noqa: F401
               naive, si)
from .config import TrainingConfig, make_optimizer
from .strategy import Batch, Strategy, TrainContext
from .trainer import StepStats, fit, merge, shuffled_batches, train_step

__all__ = ["TrainingConfig", "make_optimizer", "Batch", "Strategy", "TrainContext", "StepStats", "fit", "merge", "shuffled_batches",
           "train_step"]
