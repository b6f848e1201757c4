"""Discrete key-value bottleneck: only the values the batch fetched change; the strategy refuses
optimisers whose state would move the others."""
import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import class_incremental
from palimpsest.learn import TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.memory.dkvb import DiscreteKeyValueBottleneck
from palimpsest.models import create_model


def test_one_step_changes_exactly_the_fetched_values():
    torch.manual_seed(0)
    bottleneck = DiscreteKeyValueBottleneck(10, 3, codebooks=6, keys=20, key_dim=2)
    bottleneck.init_keys(torch.randn(200, 10), iterations=5)
    z, y = torch.randn(8, 10), torch.randint(0, 3, (8,))
    fetched = bottleneck.fetch(z)                                    # (B, C)
    before = bottleneck.values.detach().clone()
    optimizer = torch.optim.SGD([bottleneck.values], lr=1.0)
    torch.nn.functional.cross_entropy(bottleneck(z), y).backward()
    grad_rows = bottleneck.values.grad.abs().sum(-1) > 0
    optimizer.step()
    changed = (bottleneck.values.detach() - before).abs().sum(-1) > 0    # (C, K)
    expected = torch.zeros_like(changed)
    expected[torch.arange(6).unsqueeze(0).expand_as(fetched), fetched] = True
    assert torch.equal(changed, expected) and torch.equal(grad_rows, expected)
    assert 0 < int(expected.sum()) < expected.numel()


def test_the_strategy_keeps_the_encoder_and_keys_frozen_and_learns_in_class_il(digits):
    stream = class_incremental(digits, 5)
    strategy = STRATEGIES.create("dkvb", codebooks=16, keys=32)
    torch.manual_seed(0)
    model = strategy.prepare(create_model("mlp", stream=stream, hidden=(16,)))
    cfg = TrainingConfig(epochs=1, batch_size=32, lr=0.5)
    strategy.check_training(cfg)
    ctx = TrainContext(model, make_optimizer(strategy.parameters(model), cfg), stream, cfg, torch.device("cpu"), 0)
    strategy.setup(ctx)
    encoder = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train_step(ctx, strategy, stream.train[0])
    keys = model.head.keys.clone()
    assert bool(model.head.initialised)
    train_step(ctx, strategy, stream.train[1])
    assert torch.equal(model.head.keys, keys)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in encoder.items())
    assert [p is model.head.values for p in strategy.parameters(model)] == [True]


@pytest.mark.parametrize("bad", [{"optimizer": "adam"}, {"momentum": 0.9}, {"weight_decay": 1e-4}])
def test_optimiser_state_that_would_move_unfetched_values_is_refused(bad):
    with pytest.raises(ConfigError, match="plain SGD"):
        STRATEGIES.create("dkvb").check_training(TrainingConfig(**bad))
