"""PRD ("Prototype-Sample Relation Distillation: Towards Replay-Free Continual Learning", ICML 2023):
SupCon on two views, prototypes that follow the features without shaping them, and a distillation
that keeps the old prototypes' relations to new samples; no example is stored."""
import torch
from torch.nn import functional as F

from palimpsest.learn import Batch
from palimpsest.learn.prd import relation_distillation, scaled_scores

from .test_conformance import fit
from .test_pcr import incoming_batch
from .test_uer import evaluate


def test_relation_distillation_is_a_soft_cross_entropy_per_group():
    new = torch.tensor([[1.0, 2.0, 0.0, 5.0]])
    old = torch.tensor([[0.0, 1.0, 3.0, 5.0]])
    groups = [torch.tensor([0, 1]), torch.tensor([2])]
    expected = -(F.softmax(old[:, :2], 1) * F.log_softmax(new[:, :2], 1)).sum()   # a group of one class adds 0
    assert torch.allclose(relation_distillation(new, old, groups), expected)
    w = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(scaled_scores(torch.tensor([[1.0, 1.0]]), w), torch.tensor([[7.0 / 5.0]]))


def test_prd_trains_on_two_views_and_predicts_by_cosine_to_the_prototypes(digits_stream):
    strategy, model, ctx = fit("prd", digits_stream, steps=1)
    values = {"incoming": 12}
    batch = strategy.prepare_batch(ctx, incoming_batch(digits_stream.train[1]), values)
    assert len(batch.targets) == 24 and torch.equal(batch.targets[:12], batch.targets[12:])
    x = digits_stream.test[0].inputs[:5]
    with torch.no_grad():
        logits = strategy.eval_model(model)(x)
        cosine = F.normalize(model.features(x), dim=1) @ F.normalize(model.head.weight, dim=1).T
    assert torch.allclose(logits[:, :2], cosine[:, :2], atol=1e-6) and (logits[:, 2:] < -1e3).all()   # classes not seen: masked


def test_prototypes_follow_the_features_without_shaping_them(digits_stream):
    strategy, model, ctx = fit("prd", digits_stream, settings={"distill_coef": 0.0}, steps=0)
    exp = digits_stream.train[0]
    batch = Batch(inputs=exp.inputs[:32], targets=exp.targets[:32], task_ids=torch.zeros(32, dtype=torch.long))
    output = ctx.output(batch)
    full = strategy.batch_loss(ctx, batch, output, {"incoming": 32})
    projected = F.normalize(model.projector(output.features), dim=1)
    from palimpsest.train.losses import supervised_contrastive
    supcon = supervised_contrastive(projected, batch.targets, temperature=strategy.config.temperature)
    backbone = list(model.backbone.parameters())
    extra = torch.autograd.grad(full - supcon, backbone + [model.head.weight], allow_unused=True)
    assert all(g is None or g.abs().max() < 1e-7 for g in extra[:-1])   # the prototype loss: no gradient to f
    rows = extra[-1].abs().sum(1)
    assert rows[[0, 1]].min() > 0 and rows[2:].max() == 0                # only the batch's classes' prototypes move


def test_distillation_pulls_nothing_for_an_unchanged_model_and_reaches_the_old_prototypes(digits_stream):
    strategy, model, ctx = fit("prd", digits_stream, steps=1)
    assert strategy.old_groups == [[0, 1]]
    x = digits_stream.train[1].inputs[:32]
    batch = Batch(inputs=x, targets=digits_stream.train[1].targets[:32])

    def gradients():
        loss = strategy.distillation(ctx, batch, model.features(x))
        return torch.autograd.grad(loss, [*model.backbone.parameters(), model.head.weight])

    assert max(g.abs().max().item() for g in gradients()) < 1e-6
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.3 * torch.randn_like(p))
    *backbone, head = gradients()
    assert max(g.abs().max().item() for g in backbone) > 1e-3
    rows = head.abs().sum(1)
    assert rows[[0, 1]].min() > 0 and rows[2:].max() == 0               # old prototypes evolve with the features


def run_class_il(name, stream, settings=None, seed=0):
    strategy, _, ctx = fit(name, stream, seed=seed, settings=settings, epochs=5)
    return evaluate(strategy, ctx, stream)


def test_prd_beats_lwf_in_class_incremental_learning_without_exemplars(digits_stream):
    lwf_accuracy, lwf_bias = run_class_il("lwf", digits_stream)
    prd_accuracy, prd_bias = run_class_il("prd", digits_stream)
    # measured (seed 0, hidden 16, 5 epochs, SGD 0.05): LwF 18.3 % with every test image called one of the
    # last two classes; PRD 45.8 % and 22.5 %
    assert prd_accuracy > lwf_accuracy + 0.15 and prd_bias < lwf_bias - 0.3
