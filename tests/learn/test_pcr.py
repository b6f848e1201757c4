"""PCR and HPCR ("PCR: Proxy-based Contrastive Replay for Online Class-Incremental Continual
Learning", CVPR 2023; "HPCR: Holistic Proxy-based Contrastive Replay", 2023)."""
import pytest
import torch

from palimpsest.learn import Batch

from .test_conformance import fit
from .test_uer import run_online


def incoming_batch(exp, n=12):
    return Batch(inputs=exp.inputs[:n], targets=exp.targets[:n], task_ids=torch.full((n,), exp.task_id))


def test_pcr_pulls_only_the_proxies_of_classes_in_the_batch(digits_stream):
    strategy, model, ctx = fit("pcr", digits_stream, settings={"buffer_size": 40}, steps=1)
    values = {"incoming": 12}
    batch = strategy.prepare_batch(ctx, incoming_batch(digits_stream.train[1]), values)
    assert len(batch.targets) == 2 * 12 + 2 * 12                 # incoming, their views, replayed, their views
    present = set(batch.targets.tolist())
    assert present <= {0, 1, 2, 3} and {2, 3} <= present
    model.zero_grad()
    strategy.batch_loss(ctx, batch, ctx.output(batch), values).backward()
    row_grad = model.head.weight.grad.abs().sum(1)
    absent = [c for c in range(10) if c not in present]
    assert row_grad[absent].max() == 0 and row_grad[sorted(present)].min() > 0
    assert model.head.bias.grad is None or model.head.bias.grad.abs().max() == 0   # proxies have no bias


def test_pcr_has_no_loss_before_its_buffer_holds_anything(digits_stream):
    strategy, model, ctx = fit("pcr", digits_stream, settings={"buffer_size": 40}, steps=0)
    values = {"incoming": 12}
    batch = strategy.prepare_batch(ctx, incoming_batch(digits_stream.train[0]), values)
    assert len(batch.targets) == 24 and strategy.batch_loss(ctx, batch, ctx.output(batch), values).item() == 0


def test_hpcr_temperature_factor_cycles_within_an_experience():
    from palimpsest.core.registry import STRATEGIES
    hpcr = STRATEGIES.create("hpcr", period=100)
    assert hpcr.temperature_factor(0) == pytest.approx(0.5625)
    assert hpcr.temperature_factor(50) == pytest.approx(1.8)
    assert hpcr.temperature_factor(100) == pytest.approx(0.5625)


def test_hpcr_distillation_pulls_nothing_for_an_unchanged_model_and_pulls_after_drift(digits_stream):
    strategy, model, ctx = fit("hpcr", digits_stream, settings={"buffer_size": 40, "augmentation": "none"}, steps=1)
    ctx.step = 1
    # make the buffer's stored logits and features what the current model gives its inputs
    data = strategy.buffer.buffer.data
    with torch.no_grad():
        features = model.features(data["inputs"])
        data["features"].copy_(features)
        data["logits"].copy_(strategy.cosine(ctx, features))
    weights = list(model.backbone.parameters())

    def distillation_gradient():
        """Largest gradient entry of HPCR's loss minus its (tau-scaled) contrastive part."""
        values = {"incoming": 12}
        torch.manual_seed(1)
        batch = strategy.prepare_batch(ctx, incoming_batch(digits_stream.train[1]), values)
        output = ctx.output(batch)
        full = strategy.batch_loss(ctx, batch, output, values)
        contrastive = strategy.temperature_factor(strategy._iteration - 1) * strategy.contrastive(
            ctx, output.features, batch.targets)
        grads = torch.autograd.grad(full - contrastive, weights)
        return max(g.abs().max().item() for g in grads)

    assert distillation_gradient() < 1e-5
    with torch.no_grad():
        for p in weights:
            p.add_(0.3 * torch.randn_like(p))
    assert distillation_gradient() > 1e-3


def test_proxy_contrastive_replay_beats_er_online(digits):
    er_accuracy, er_bias = run_online("er", digits)
    pcr_accuracy, pcr_bias = run_online("pcr", digits)
    # measured (seed 0, buffer 100): ER 42%, PCR 70%, with 72% and 31% of predictions in the last two classes
    assert pcr_accuracy > er_accuracy + 0.15 and pcr_bias < er_bias - 0.2


def test_hpcr_anchor_to_sample_pairs_pull_rows_of_a_class_together():
    from palimpsest.learn.pcr import proxy_sample_contrastive
    torch.manual_seed(0)
    proxies = torch.nn.functional.normalize(torch.eye(3, 8), dim=1)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    near = torch.nn.functional.normalize(proxies[targets] + 0.05 * torch.randn(6, 8), dim=1)
    apart = near.clone()
    apart[1] = torch.nn.functional.normalize(proxies[0] + 1.0 * torch.randn(8), dim=0)
    assert proxy_sample_contrastive(near, targets, proxies, 0.1) < proxy_sample_contrastive(apart, targets, proxies, 0.1)
    # the sample-to-sample part moves one row's feature towards another row of its class: PCR's does not
    rows = near.clone().requires_grad_(True)
    proxy_sample_contrastive(rows, targets, proxies, 0.1).backward()
    with_pairs = rows.grad[0].clone()
    rows.grad = None
    from palimpsest.train.losses import supervised_contrastive
    supervised_contrastive(rows, targets, proxies[targets], targets, 0.1).backward()
    assert not torch.allclose(with_pairs, rows.grad[0], atol=1e-4)


def test_hpcr_sample_pairs_follow_the_batch_size_step(digits_stream):
    from palimpsest.core.registry import STRATEGIES
    features, targets = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    strategy, model, ctx = fit("hpcr", digits_stream, settings={"buffer_size": 40}, steps=0)
    small = STRATEGIES.create("hpcr", sample_pairs_min_batch=9)
    never = STRATEGIES.create("hpcr", sample_pairs_min_batch=None)
    pcr_only = never.contrastive(ctx, features, targets)
    assert torch.equal(small.contrastive(ctx, features, targets), pcr_only)        # 8 rows < 9: PCR's pairs only
    assert not torch.equal(strategy.contrastive(ctx, features, targets), pcr_only)  # default 0: with sample pairs
