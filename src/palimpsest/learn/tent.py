"""Label-free test-time adaptation: the model adapts to shifted inputs without ever seeing a label
(run by `kind: adapt`, which withholds the labels and evaluates with them itself).

    source  no adaptation: the source model as it was trained (the baseline every method is read against)
    norm    test-time normalisation: BatchNorm layers normalise with the statistics of each test batch
            instead of the running statistics of the source data (Schneider et al., "Improving
            robustness against common corruptions by covariate shift adaptation", NeurIPS 2020)
    tent    TENT: test-time normalisation plus entropy minimisation of the model's predictions, updating
            only the BatchNorm affine parameters, one step per test batch (Wang, Shelhamer, Liu, Olshausen
            and Darrell, "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021; the
            authors' configure_model / softmax_entropy, online and not episodic; their optimiser for
            CIFAR is Adam at lr 1e-3, which `kind: adapt` uses by default)

Departures: models without BatchNorm get no normalisation parameters, so `tent` and `norm` refuse
them (TENT's paper uses BatchNorm networks; LayerNorm/GroupNorm variants exist but are not TENT).
"""
from __future__ import annotations

from torch import nn

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import STRATEGIES
from .strategy import Strategy


def norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def use_batch_statistics(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Make every BatchNorm layer normalise with the current batch's statistics, in training and in
    evaluation (TENT's configure_model: no running statistics). Returns the layers."""
    layers = norm_layers(model)
    if not layers:
        raise ConfigError("test-time normalisation needs BatchNorm layers", expected="a model with BatchNorm",
                          got=type(model).__name__, fix="use e.g. model {name: cnn, settings: {norm: batch}}")
    for m in layers:
        m.track_running_stats = False
        m.running_mean = None
        m.running_var = None
    return layers


class _NoTraining(Strategy):
    label_free = True

    def passes(self, ctx):
        return 0, ctx.training.batch_size

    def parameters(self, model):
        return []


@STRATEGIES.register("source", summary="no adaptation: the source model as trained (label-free baseline)",
                     label_free=True)
class Source(_NoTraining):
    """The source model, unchanged."""

    name = "source"


@STRATEGIES.register("norm", summary="test-time BatchNorm statistics (Schneider et al. 2020)", label_free=True)
class TestTimeNorm(_NoTraining):
    """BatchNorm layers normalise with each test batch's statistics; no parameter changes."""

    name = "norm"
    model_requirements = frozenset({"batchnorm"})

    def prepare(self, model):
        use_batch_statistics(model)
        return model


@STRATEGIES.register("tent", summary="TENT: entropy minimisation of BatchNorm affine parameters at test time "
                     "(Wang et al. 2021)", label_free=True)
class Tent(Strategy):
    """Minimise the mean entropy of the predictions on each test batch, updating only the BatchNorm
    affine parameters, with test-batch statistics (Wang et al., ICLR 2021)."""

    name = "tent"
    label_free = True
    model_requirements = frozenset({"batchnorm"})

    class Config(Settings):
        pass

    def prepare(self, model):
        model.requires_grad_(False)
        for m in use_batch_statistics(model):
            m.requires_grad_(True)
        return model

    def parameters(self, model):
        return [p for m in norm_layers(model) for p in m.parameters() if p.requires_grad]

    def batch_loss(self, ctx, batch, output, values):
        logits = output.logits
        # entropy over the classes the model can predict (masked logits have probability 0)
        return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean(0)


__all__ = ["Source", "Tent", "TestTimeNorm", "norm_layers", "use_batch_statistics"]
