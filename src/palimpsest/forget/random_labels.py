"""Random-label unlearning: Graves et al., "Amnesiac Machine Learning" (AAAI 2021); the random
relabelling baseline of Golatkar et al. (CVPR 2020) and "RL" in SalUn (Fan et al., ICLR 2024).

Every forget example gets a random WRONG label (drawn once, uniformly among the other classes the
model can predict) and the model is fine-tuned on them. Each step joins a forget batch with
`retain_ratio` times as many retain examples under their true labels and descends the mean
cross-entropy of the joined batch; an epoch is one pass over the forget set, so the cost grows
with the forget set and retain_ratio, not the training set. retain_ratio=0 is Graves et al.'s form
that reads the forget set only; retain_ratio=None is SalUn's loader, the shuffled union of the
relabelled forget set and the retain set in batches of the recipe's size, an epoch being one pass
over the union (as costly as an epoch of retraining).
"""
from __future__ import annotations

from pydantic import Field

from ..core.config import Settings
from ..core.registry import UNLEARNERS
from .common import RelabelFinetune


@UNLEARNERS.register("random_labels", summary="fine-tune on the forget set with random wrong labels (+ retain)")
class RandomLabels(RelabelFinetune):
    """Graves et al. (AAAI 2021): fine-tune on the forget set relabelled at random, with retain batches."""

    name = "random_labels"
    reads = {"forget": "examples", "retain": "examples"}
    zero_steps = {"epochs": 0}

    class Config(Settings):
        epochs: int = Field(2, ge=0, description="passes over the forget set")
        lr: float = Field(0.01, gt=0, description="learning rate (the recipe's optimizer kind)")
        batch_size: int | None = Field(None, ge=1, description="batch size of each split; None: the original recipe's")
        retain_ratio: float | None = Field(1.0, ge=0, description="retain examples (true labels) joined to each "
                                           "forget example in a step (an epoch = a pass over the forget set); "
                                           "None: SalUn's loader, the shuffled union of both sets in batches "
                                           "(an epoch = a pass over the union); 0: the forget set only")
