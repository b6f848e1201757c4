"""LoRA adapters as a strategy plug-in: "LoRA: Low-Rank Adaptation of Large Language Models" (Hu et al.,
ICLR 2022), through the PEFT library (optional extra: `pip install palimpsest[peft]`).

Before the optimizer exists, `prepare` injects a low-rank update W + (alpha/r) B A into every
nn.Linear layer under `target` (default: the backbone) with peft's `inject_adapter_in_model`, and
leaves trainable only the adapters (and the head, with `train_head`). Everything else is frozen, so
a checkpoint holds the adapters and the head plus a digest of the frozen base (run/kinds/learn.py).
B starts at zero, so the wrapped model computes exactly what the base did until it trains.

Compose it with any strategy: `{name: naive, plus: [lora]}` fine-tunes adapters on each
experience; `{name: er, plus: [{name: lora, settings: {r: 8}}]}` replays into them. On a frozen
pretrained encoder (model `freeze: [backbone]` with `weights:`), the adapters are what learns.
"""
from __future__ import annotations

from pydantic import Field
from torch import nn

from ..core.config import Settings
from ..core.errors import ConfigError
from ..core.registry import STRATEGIES
from .strategy import Strategy


def linear_targets(model: nn.Module, prefix: str) -> list[str]:
    """Names of the nn.Linear modules at or under `prefix` ("" = the whole model)."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
            and (not prefix or n == prefix or n.startswith(prefix + "."))]


@STRATEGIES.register("lora", summary="low-rank adapters on the backbone's linear layers, everything else frozen "
                     "(Hu et al. 2022; a plug-in: {name: naive, plus: [lora]})")
class LoRA(Strategy):
    """LoRA adapters injected before training (Hu et al., ICLR 2022), via peft."""

    name = "lora"

    class Config(Settings):
        r: int = Field(4, ge=1, description="rank of each adapter")
        alpha: float = Field(8.0, gt=0, description="scaling: the update is (alpha / r) B A")
        dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
        target: str = Field("backbone", description="module name under which every nn.Linear gets an adapter "
                            "('' = every linear layer of the model)")
        train_head: bool = Field(True, description="keep the head trainable (a new task needs its classes)")

    def prepare(self, model):
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise ConfigError("the lora strategy needs the peft library", expected="peft installed",
                              got="no module named peft", fix="pip install 'palimpsest[peft]'") from None
        c = self.config
        targets = linear_targets(model, c.target)
        if not targets:
            raise ConfigError(f"no linear layer under {c.target!r} for LoRA adapters",
                              expected="a module name with nn.Linear layers under it",
                              got=c.target, fix="set target to e.g. 'backbone' (or '' for the whole model)")
        config = LoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=targets)
        model = inject_adapter_in_model(config, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name or (c.train_head and name.split(".")[0] in ("head", "heads")))
        return model

    def parameters(self, model):
        return [p for p in model.parameters() if p.requires_grad]


__all__ = ["LoRA", "linear_targets"]
