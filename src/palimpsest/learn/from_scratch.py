import torch

from ..core.registry import STRATEGIES
from ..core.seeding import derive_seed
from .strategy import Strategy


def reinitialise(ctx, classes, salt: str = "from_scratch") -> None:
    """Fresh weights for every trainable layer (drawn from (seed, salt, step)), an empty optimizer
    state, and a class mask that lets the model predict only `classes`. Layers whose parameters
    are all frozen (a pretrained encoder) keep their weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(ctx.seed, salt, ctx.step))
        for module in ctx.model.modules():
            own = list(module.parameters(recurse=False))
            if hasattr(module, "reset_parameters") and (not own or any(p.requires_grad for p in own)):
                module.reset_parameters()
    ctx.model.active.zero_()
    ctx.model.observe_classes(classes)
    ctx.optimizer.state.clear()


@STRATEGIES.register("from_scratch", summary="a freshly initialised model per experience (forward-transfer reference)")
class FromScratch(Strategy):
    """Reinitialise every parameter (and the optimizer state) before each experience, then train on
    that experience alone. Its diagonal accuracies are the reference for forward transfer."""

    name = "from_scratch"

    def before_experience(self, ctx, exp):
        reinitialise(ctx, exp.classes)
