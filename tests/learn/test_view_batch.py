"""The view-batch model ("Do Your Best and Get Enough Rest for Continual Learning", CVPR 2025): each
example as R views in one batch, revisited R times less often at the same budget of rows and steps,
plus a KL term pulling every augmented view towards its example's first view."""
import pytest
import torch

from palimpsest.core.registry import STRATEGIES
from palimpsest.learn import Batch, Composite, TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.learn.view_batch import view_batch, view_consistency
from palimpsest.models import create_model


def visits(strategy, stream, epochs):
    """For one experience trained with `strategy`: the optimizer steps, and for each stream example the
    set of steps whose batch held it (recorded from the incoming rows the strategy is handed)."""
    torch.manual_seed(0)
    model = create_model("mlp", stream=stream, hidden=(16,))
    cfg = TrainingConfig(epochs=epochs, batch_size=32, lr=0.05)
    ctx = TrainContext(model, make_optimizer(strategy.parameters(model), cfg), stream, cfg, torch.device("cpu"), 0)
    strategy.setup(ctx)
    exp = stream.train[0]
    key = {tuple(x.flatten().tolist()): i for i, x in enumerate(exp.inputs)}
    seen: dict[int, set[int]] = {}
    rows: list[int] = []
    original = strategy.prepare_batch

    def spy(ctx_, batch, values):
        step = len(rows)
        for x in batch.head(values["incoming"])["inputs"]:
            seen.setdefault(key[tuple(x.flatten().tolist())], set()).add(step)
        out = original(ctx_, batch, values)
        rows.append(out.rows)
        return out

    strategy.prepare_batch = spy
    train_step(ctx, strategy, exp)
    return len(rows), seen, rows


def test_views_in_one_batch_replace_revisits_at_the_same_budget(digits_stream):
    steps, seen, rows = visits(STRATEGIES.create("naive"), digits_stream, epochs=4)
    vb_steps, vb_seen, vb_rows = visits(STRATEGIES.create("view_batch", views=4), digits_stream, epochs=4)
    n = len(digits_stream.train[0])
    # the same number of steps of (up to) the same 32 rows
    assert abs(vb_steps - steps) <= 4 and max(vb_rows) == max(rows) == 32
    # plain fine-tuning meets each example in 4 steps, one per epoch; view-batch in one step, as 4 views
    assert len(seen) == len(vb_seen) == n
    assert all(len(s) == 4 for s in seen.values()) and all(len(s) == 1 for s in vb_seen.values())


def test_composed_it_reshapes_the_main_strategys_passes_and_keeps_its_buffer_clean(digits_stream):
    er, vb = STRATEGIES.create("er", buffer_size=50), STRATEGIES.create("view_batch", views=4)
    both = Composite(er, [vb])
    steps, _, rows = visits(both, digits_stream, epochs=4)
    # 8 incoming + 8 replayed examples, each as 4 views: ER's 2 x 32 rows per step
    assert max(rows) == 64
    stored = er.buffer.all()["inputs"]
    exp = digits_stream.train[0]
    originals = {tuple(x.flatten().tolist()) for x in exp.inputs}
    assert len(stored) == 50 and all(tuple(x.flatten().tolist()) in originals for x in stored)


def test_adjust_passes_divides_batch_and_epochs_by_the_views():
    vb = STRATEGIES.create("view_batch", views=4)
    assert vb.adjust_passes(None, 4, 128) == (1, 32)
    assert vb.adjust_passes(None, 6, 128) == (2, 32)
    assert vb.adjust_passes(None, 1, 10) == (1, 2)       # online: one pass, more steps


def test_the_first_block_is_the_batch_and_the_views_are_augmented():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 8, 8)
    batch = Batch(inputs=x, targets=torch.tensor([0, 1, 2]), task_ids=torch.zeros(3, dtype=torch.long))
    out = view_batch(batch, 3, "strong")
    assert out.rows == 9 and torch.equal(out["inputs"][:3], x)
    assert torch.equal(out["targets"], batch["targets"].repeat(3))
    assert not torch.equal(out["inputs"][3:6], x) and not torch.equal(out["inputs"][3:6], out["inputs"][6:9])


def test_view_consistency_is_zero_for_agreeing_views_and_pulls_only_the_views():
    logits = torch.randn(4, 5)
    same = logits.repeat(3, 1).requires_grad_(True)
    assert view_consistency(same, 4, 3).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.cat([logits, torch.randn(8, 5)]).requires_grad_(True)
    loss = view_consistency(other, 4, 3)
    loss.backward()
    assert loss.item() > 0 and torch.equal(other.grad[:4], torch.zeros(4, 5)) and other.grad[4:].abs().sum() > 0
