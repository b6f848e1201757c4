"""Continual-learning strategies. Importing this package registers every built-in strategy."""
from . import (agem, cumulative, der, dkvb, er, er_ace, ewc, from_scratch, gdumb, icarl, joint, l2, lora,  # noqa: F401
               lwf, mas, naive, si, tent)
from . import fpf, napa_vq, onpro, pcr, prd, refresh, uer, view_batch, wa  # noqa: F401  (seed methods, issue 14)
from ..data.batch import Batch
from ..data.scenarios import merge
from ..train.batching import shuffled_batches
from ..train.config import TrainingConfig, build_optimizer
from .components import Component, NamedTensors, QuadraticPenalty, ReplayMemory, Snapshot
from .strategy import Composite, Strategy, TrainContext
from .trainer import StepStats, fit, train_step

make_optimizer = build_optimizer  # the name older code uses

__all__ = ["TrainingConfig", "build_optimizer", "make_optimizer", "Batch", "Component", "Composite", "NamedTensors",
           "QuadraticPenalty", "ReplayMemory", "Snapshot", "Strategy", "TrainContext", "StepStats", "fit", "merge",
           "shuffled_batches", "train_step"]
