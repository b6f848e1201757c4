"""OnPro ("Online Prototype Learning for Online Continual Learning", ICCV 2023): online prototype
equilibrium and adaptive prototypical feedback."""
import torch

from palimpsest.core.registry import STRATEGIES
from palimpsest.learn import Batch
from palimpsest.learn.onpro import prototype_equilibrium

from .test_conformance import fit


def test_prototype_equilibrium_is_low_when_each_class_keeps_its_prototype_across_views():
    torch.manual_seed(0)
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    centres = torch.eye(3) * 5
    view1 = centres[targets] + 0.1 * torch.randn(6, 3)
    view2 = centres[targets] + 0.1 * torch.randn(6, 3)
    agreeing, classes, means = prototype_equilibrium(view1, view2, targets, 0.5)
    swapped, _, _ = prototype_equilibrium(view1, view2[[2, 3, 4, 5, 0, 1]], targets, 0.5)
    assert classes.tolist() == [0, 1, 2] and means.shape == (3, 3)
    assert agreeing < swapped - 1.0


def test_feedback_mixes_mostly_the_classes_whose_prototypes_are_closest(digits_stream):
    strategy, model, ctx = fit("onpro", digits_stream, settings={"buffer_size": 60}, steps=2)
    stored = set(strategy.buffer.buffer.data["targets"].tolist())
    assert stored == {0, 1, 2, 3}
    means = torch.zeros(10, 4)
    means[0], means[1] = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0.95, 0.05, 0, 0])   # close
    means[2], means[3] = torch.tensor([0, 0, 1.0, 0]), torch.tensor([0, 0, 0, 1.0])       # far apart
    strategy.prototypes["means"] = means
    torch.manual_seed(0)
    _, first, second, lam, _ = strategy.guided_pairs(means[[0, 1, 2, 3]], torch.tensor([0, 1, 2, 3]), 40)
    pairs = {tuple(sorted(p)) for p in zip(first.tolist(), second.tolist())}
    closest = ((first == 0) & (second == 1)).sum().item()
    assert closest >= 30 and len(first) == 40 and pairs <= {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)}
    assert ((lam >= 0) & (lam <= 1)).all()


def test_a_step_stores_the_incoming_rows_unrotated_and_the_buffer_prototypes(digits_stream):
    strategy, model, ctx = fit("onpro", digits_stream, settings={"buffer_size": 1000}, steps=1)
    ctx.step = 1
    before = len(strategy.buffer)
    exp = digits_stream.train[1]
    incoming = Batch(inputs=exp.inputs[:8], targets=exp.targets[:8], task_ids=torch.full((8,), 1))
    values = {"incoming": 8}
    batch = strategy.prepare_batch(ctx, incoming, values)
    sizes = values["onpro_sizes"]
    assert sizes["incoming"] == 4 * 8 and sizes["replayed"] == 4 * 8 and sizes["seen"] == 8
    assert torch.equal(batch.head(8)["inputs"], incoming["inputs"])
    loss = strategy.batch_loss(ctx, batch, ctx.output(batch), values)
    assert torch.isfinite(loss)
    strategy.after_step(ctx, batch, values)
    assert set(strategy.prototypes["means"].abs().sum(1).nonzero().flatten().tolist()) <= {0, 1}
    assert len(strategy.buffer) == before + 8        # (room left): the 8 incoming rows, not their rotations
    assert torch.equal(strategy.buffer.buffer.data["inputs"][before:before + 8], incoming["inputs"])


def test_task_incremental_is_declared_unsupported():
    assert "task" in STRATEGIES.get("onpro").obj.unsupported
