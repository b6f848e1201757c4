from ..core.registry import UNLEARNERS
from ..core.seeding import derive_seed
from ..train.fit import fit
from .base import Unlearned, Unlearner


@UNLEARNERS.register("retrain", summary="exact: a fresh model trained on the retain set with the original recipe")
class Retrain(Unlearner):
    """Exact unlearning by definition: a newly initialised model (every layer re-drawn, not only
    some) trained on the retain set with the original recipe. It is also the audits' reference."""

    name = "retrain"
    reads = {"retain": "examples"}
    exact = True

    def unlearn(self, model, data, ctx):
        import torch
        retain = data.retain()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(ctx.seed, "retrain"))
            fresh = ctx.make_model().to(ctx.device)
        stats = fit(fresh, retain.inputs, retain.targets, ctx.training, ctx.seed, ctx.device, stage="retrain")
        return Unlearned(fresh.eval(), {"steps": stats.n_batches, "mean_loss": stats.mean_loss})
