"""Behaviour of the quadratic regularisers (EWC, online EWC, SI, MAS, L2) on digits: assertions
that fail if a penalty, an importance or a path integral is wrong."""
import copy
import warnings

import pytest
import torch
from torch.func import functional_call, grad, vmap

# Importing the modules registers ewc, online_ewc, l2, mas and si.
import palimpsest.learn.ewc
import palimpsest.learn.l2
import palimpsest.learn.mas
import palimpsest.learn.si  # noqa: F401
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import domain_incremental, task_incremental
from palimpsest.evaluate import evaluate_stream
from palimpsest.learn import Batch, TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.learn.ewc import fisher_diagonal
from palimpsest.learn.components import QuadraticPenalty
from palimpsest.train.importance import per_example_importance
from palimpsest.models import create_model
from palimpsest.run.store.files import load_state, save_state

from .test_conformance import fit

REGULARISERS = ["ewc", "online_ewc", "si", "mas", "l2"]
# Strong enough to matter on digits, below the step size at which SGD (lr 0.05) diverges.
SETTINGS = {"ewc": {"ewc_lambda": 10}, "online_ewc": {"ewc_lambda": 10}, "si": {"si_c": 1.0},
            "mas": {"mas_lambda": 0.1}, "l2": {"l2_lambda": 0.3}}


def make_ctx(stream, seed=0, hidden=(16,), head="single", lr=0.05, model="mlp"):
    torch.manual_seed(seed)
    net = create_model(model, stream=stream, head=head, **({"hidden": hidden} if model == "mlp" else {}))
    cfg = TrainingConfig(epochs=1, batch_size=32, lr=lr)
    return TrainContext(net, make_optimizer(net.parameters(), cfg), stream, cfg, torch.device("cpu"), seed)


def run_steps(ctx, strategy, stream, steps):
    for k in steps:
        ctx.step = k
        train_step(ctx, strategy, stream.train[k])


# -- the shared penalty ----------------------------------------------------------------------------
def test_penalty_is_zero_at_the_anchor_and_quadratic_away_from_it(digits_stream):
    model = create_model("mlp", stream=digits_stream, hidden=(16,))
    penalty = QuadraticPenalty()
    assert float(penalty(model).detach()) == 0.0 and not penalty
    gen = torch.Generator().manual_seed(0)
    penalty.consolidate(model, {n: torch.rand(p.shape, generator=gen) for n, p in model.named_parameters()})
    assert float(penalty(model).detach()) == 0.0
    direction = [torch.randn(p.shape, generator=gen) for p in model.parameters()]
    values = []
    for step in (0.01, 0.02, 0.04):
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for p, d in zip(moved.parameters(), direction):
                p.add_(step * d)
        values.append(float(penalty(moved).detach()))
    assert values[0] > 0
    assert values[1] / values[0] == pytest.approx(4.0, rel=1e-3)
    assert values[2] / values[0] == pytest.approx(16.0, rel=1e-3)


def test_added_gradient_equals_the_autograd_gradient_of_the_penalty(digits_stream):
    model = create_model("mlp", stream=digits_stream, hidden=(16,))
    penalty = QuadraticPenalty()
    penalty.consolidate(model, {n: torch.rand_like(p) for n, p in model.named_parameters()})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    (0.7 * penalty(model)).backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    penalty.add_gradient(model, 0.7)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, e)


def test_summed_ewc_penalties_are_stored_exactly_as_one_quadratic(digits_stream):
    model = create_model("mlp", stream=digits_stream, hidden=(16,))
    penalty = QuadraticPenalty()
    fishers, anchors = [], []
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        fishers.append({n: torch.rand_like(p) for n, p in model.named_parameters()})
        anchors.append({n: p.detach().clone() for n, p in model.named_parameters()})
        penalty.consolidate(model, fishers[-1], merge_anchors=True)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    penalty.add_gradient(model, 1.0)
    for name, p in model.named_parameters():
        separate = sum(2 * f[name] * (p.detach() - a[name]) for f, a in zip(fishers, anchors))
        torch.testing.assert_close(p.grad, separate, rtol=1e-4, atol=1e-5)


# -- every regulariser ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", REGULARISERS)
def test_importances_are_finite_and_nonzero_and_the_anchor_costs_nothing(name, digits_stream):
    strategy, model, _ = fit(name, digits_stream, settings=SETTINGS[name], steps=2)
    penalty = strategy.penalty
    assert penalty.importance.keys() == dict(model.named_parameters()).keys()
    total = sum(float(v.sum()) for v in penalty.importance.values())
    assert total > 0
    for omega in penalty.importance.values():
        assert torch.isfinite(omega).all() and (omega >= 0).all()
    at_anchor = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in at_anchor.named_parameters():
            p.copy_(penalty.anchor[n])
    assert float(penalty(at_anchor).detach()) == 0.0
    assert float(penalty(model).detach()) >= 0.0


@pytest.mark.parametrize("name", REGULARISERS)
def test_first_experience_trains_like_naive_and_later_ones_differ(name, digits_stream):
    _, naive1, _ = fit("naive", digits_stream, steps=1)
    _, reg1, _ = fit(name, digits_stream, settings=SETTINGS[name], steps=1)
    for p, q in zip(naive1.parameters(), reg1.parameters()):
        assert torch.equal(p, q)     # no penalty before the first consolidation
    _, naive3, _ = fit("naive", digits_stream, steps=3)
    _, reg3, _ = fit(name, digits_stream, settings=SETTINGS[name], steps=3)
    gap = max(float((p - q).abs().max().detach()) for p, q in zip(naive3.parameters(), reg3.parameters()))
    assert gap > 1e-3


@pytest.mark.parametrize("name", REGULARISERS)
def test_forgets_less_than_naive_on_permuted_digits(name, digits):
    stream = domain_incremental(digits, 3)

    def first_task_accuracy(strategy_name, settings, steps):
        _, model, _ = fit(strategy_name, stream, settings=settings, steps=steps, epochs=5)
        return evaluate_stream(model, stream).accuracy("task")[0]

    def forgetting(strategy_name, settings):
        return first_task_accuracy(strategy_name, settings, 1) - first_task_accuracy(strategy_name, settings, None)

    naive = forgetting("naive", {})
    assert naive > 0.3   # the benchmark forgets: permutations overwrite each other
    assert forgetting(name, SETTINGS[name]) < naive - 0.15


@pytest.mark.parametrize("name", REGULARISERS)
def test_resuming_from_saved_state_continues_exactly(name, digits_stream, tmp_path):
    ctx = make_ctx(digits_stream)
    strategy = STRATEGIES.create(name, **SETTINGS[name])
    run_steps(ctx, strategy, digits_stream, [0, 1])
    save_state(tmp_path / "s.safetensors", strategy.state_dict())
    resumed_ctx = copy.deepcopy(ctx)
    resumed = STRATEGIES.create(name, **strategy.settings())
    resumed.load_state_dict(load_state(tmp_path / "s.safetensors"))
    run_steps(ctx, strategy, digits_stream, [2])
    run_steps(resumed_ctx, resumed, digits_stream, [2])
    for p, q in zip(ctx.model.parameters(), resumed_ctx.model.parameters()):
        assert torch.equal(p, q)


def test_an_unstable_strength_warns_and_names_the_setting(digits_stream):
    with pytest.warns(RuntimeWarning, match="ewc_lambda"):
        fit("ewc", digits_stream, settings={"ewc_lambda": 1e5}, steps=1)


@pytest.mark.parametrize("name,setting", [("ewc", "ewc_lambda"), ("si", "si_c")])
def test_no_stability_warning_after_the_last_experience(name, setting, digits_stream):
    """After the stream's last experience nothing trains, so a stiff penalty there is no warning."""
    ctx = make_ctx(digits_stream)
    strategy = STRATEGIES.create(name, **{setting: 1e6})
    last = len(digits_stream.train) - 1
    ctx.step = last
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_step(ctx, strategy, digits_stream.train[last])   # consolidates at its end: no warning
    assert strategy.penalty.curvature() * ctx.training.lr * 1e6 > 4   # stiff enough to warn elsewhere
    ctx.step = 0
    with pytest.warns(RuntimeWarning, match=setting):
        strategy.after_experience(ctx, digits_stream.train[0])


# -- SI -----------------------------------------------------------------------------------------
def test_si_path_integral_is_minus_task_gradient_times_the_actual_step(digits_stream):
    """With plain SGD, delta = -lr g, so omega must equal lr g^2 with g the cross-entropy gradient
    alone, also once the penalty is active. An aliased snapshot would give exactly 0."""
    ctx = make_ctx(digits_stream, lr=0.05)
    si = STRATEGIES.create("si", si_c=1.0)
    run_steps(ctx, si, digits_stream, [0])
    assert sum(float(v.sum()) for v in si.penalty.importance.values()) > 0
    exp = digits_stream.train[1]
    ctx.model.observe_classes(exp.classes)
    si.before_experience(ctx, exp)
    batch = Batch(inputs=exp.inputs[:32], targets=exp.targets[:32], task_ids=torch.full((32,), 1))
    values = {"incoming": 32}
    with torch.no_grad():   # move away from the anchor so the penalty's gradient is not 0
        for p in ctx.model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loss = torch.nn.functional.cross_entropy(ctx.forward(batch), batch.targets)
    task_grads = torch.autograd.grad(loss, list(ctx.model.parameters()))
    ctx.optimizer.zero_grad(set_to_none=True)
    si.batch_loss(ctx, batch, ctx.output(batch), values).backward()
    si.before_step(ctx, batch, values)
    ctx.optimizer.step()
    si.after_step(ctx, batch, values)
    # The step used task gradient + penalty gradient; omega = -g_task * delta.
    for (name, p), g in zip(ctx.model.named_parameters(), task_grads):
        step = p.detach() - si._prev[name]
        torch.testing.assert_close(si.omega[name], -g * step)
        assert not torch.equal(step, -0.05 * g)    # the penalty did move the weights too
    assert sum(float(v.sum()) for v in si.omega.values()) > 0


def test_si_omega_restarts_and_start_moves_after_each_experience(digits_stream):
    si, model, _ = fit("si", digits_stream, steps=2)
    for name, p in model.named_parameters():
        assert float(si.omega[name].abs().sum()) == 0.0
        assert torch.equal(si.start[name], p.detach())
        assert si.start[name].data_ptr() != p.data_ptr()


# -- EWC ----------------------------------------------------------------------------------------
def test_fisher_is_the_mean_of_per_example_squared_gradients(digits_stream):
    ctx = make_ctx(digits_stream)
    ewc = STRATEGIES.create("ewc")
    run_steps(ctx, ewc, digits_stream, [0])
    exp = digits_stream.train[0]
    fisher = fisher_diagonal(ctx, exp, "true")
    model = ctx.model
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(exp)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(exp.inputs[i:i + 1]), exp.targets[i:i + 1]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.square() / len(exp)
    for n, value in expected.items():
        torch.testing.assert_close(fisher[n], value, rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(ewc.penalty.importance[n], value, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("order", ["stored", "by_class"])
def test_batch_fisher_is_avalanches_estimator_written_by_hand(order, digits_stream):
    """Avalanche's EWCPlugin.compute_importances: eval mode, consecutive mini-batches in stored
    order, the square of each batch-mean gradient, averaged over the number of batches."""
    ctx = make_ctx(digits_stream)
    ewc = STRATEGIES.create("ewc", fisher_estimator="batch", fisher_batch_size=16, fisher_order=order,
                            ewc_lambda=10)
    run_steps(ctx, ewc, digits_stream, [0])
    exp = digits_stream.train[0]
    x, y = exp.inputs, exp.targets
    if order == "by_class":
        grouped = torch.argsort(y, stable=True)
        x, y = x[grouped], y[grouped]
    model, n_batches = ctx.model, 0
    model.eval()
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for start in range(0, len(y), 16):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[start:start + 16]), y[start:start + 16]).backward()
        for n, p in model.named_parameters():
            expected[n] += p.grad.square()
        n_batches += 1
    model.train()
    for n, value in expected.items():
        torch.testing.assert_close(ewc.penalty.importance[n], value / n_batches, rtol=1e-4, atol=1e-9)
    per_example = fisher_diagonal(ctx, exp, "true")
    ratio = sum(float(ewc.penalty.importance[n].sum()) for n in expected) / sum(float(v.sum())
                                                                               for v in per_example.values())
    assert ratio < 1.0   # the batch mean averages gradient noise away; the by-class order keeps more of it


def test_batch_fisher_settings_are_checked():
    from palimpsest.core.errors import PalimpsestError
    with pytest.raises(PalimpsestError, match="true labels"):
        STRATEGIES.create("ewc", fisher_estimator="batch", fisher_labels="sampled")
    with pytest.raises(PalimpsestError, match="apply to fisher_estimator 'batch' only"):
        STRATEGIES.create("ewc", fisher_order="by_class")


def test_fisher_labels_choices_differ_and_sampling_follows_the_seed(digits_stream):
    ctx = make_ctx(digits_stream)
    run_steps(ctx, STRATEGIES.create("naive"), digits_stream, [0, 1])
    exp = digits_stream.train[1]
    true = fisher_diagonal(ctx, exp, "true")
    sampled = fisher_diagonal(ctx, exp, "sampled")
    again = fisher_diagonal(ctx, exp, "sampled")
    predicted = fisher_diagonal(ctx, exp, "predicted")
    assert all(torch.equal(sampled[n], again[n]) for n in true)
    assert any(not torch.equal(true[n], sampled[n]) for n in true)
    assert any(not torch.equal(true[n], predicted[n]) for n in true)
    # Only classes seen so far (0-3) can carry Fisher information in the head.
    assert float(true["head.weight"][4:].abs().sum()) == 0.0


def test_online_ewc_fisher_decays_by_gamma(digits_stream):
    ctx = make_ctx(digits_stream)
    ewc = STRATEGIES.create("online_ewc", ewc_lambda=10, gamma=0.5)
    run_steps(ctx, ewc, digits_stream, [0])
    first = {n: v.clone() for n, v in ewc.penalty.importance.items()}
    run_steps(ctx, ewc, digits_stream, [1])
    new = fisher_diagonal(ctx, digits_stream.train[1], "true")
    for name, p in ctx.model.named_parameters():
        torch.testing.assert_close(ewc.penalty.importance[name], 0.5 * first[name] + new[name])
        assert torch.equal(ewc.penalty.anchor[name], p.detach())


def test_ewc_keeps_every_experience_online_ewc_only_the_latest_anchor(digits_stream):
    ewc, model, _ = fit("ewc", digits_stream, settings={"ewc_lambda": 10}, steps=2)
    online, model_o, _ = fit("online_ewc", digits_stream, settings={"ewc_lambda": 10, "gamma": 1.0}, steps=2)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ewc.penalty.importance[name], online.penalty.importance[name])
    # Summed penalties: the anchor lies between the two experiences' weights, not at the latest.
    assert any(not torch.equal(ewc.penalty.anchor[n], p.detach()) for n, p in model.named_parameters())
    assert all(torch.equal(online.penalty.anchor[n], p.detach()) for n, p in model_o.named_parameters())


# -- MAS ----------------------------------------------------------------------------------------
def test_mas_uses_only_the_predictable_logits(digits_stream):
    mas, model, _ = fit("mas", digits_stream, steps=1)
    omega = mas.penalty.importance
    assert float(omega["head.weight"][2:].abs().sum()) == 0.0     # masked classes
    assert float(omega["head.weight"][:2].abs().min()) > 0
    # Reference: per-example |d ||logits of classes 0, 1||^2 / d theta|, by torch.func.
    exp = digits_stream.train[0]
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def norm(ps, x):
        return functional_call(model, (ps, buffers), (x[None],))[0, :2].square().sum()

    per_example = vmap(grad(norm), in_dims=(None, 0))(params, exp.inputs)
    for n in params:
        torch.testing.assert_close(omega[n], per_example[n].abs().mean(0), rtol=1e-4, atol=1e-7)


def test_mas_multi_head_importance_stays_in_the_task_heads(digits):
    stream = task_incremental(digits, 5)
    ctx = make_ctx(stream, head="multi")
    mas = STRATEGIES.create("mas")
    run_steps(ctx, mas, stream, [0])
    omega = mas.penalty.importance
    assert float(omega["heads.0.weight"].abs().min()) > 0
    assert all(float(omega[f"heads.{t}.weight"].abs().sum()) == 0.0 for t in range(1, 5))
    assert float(omega["backbone.1.weight"].sum()) > 0


def test_importances_of_layers_without_the_linear_shortcut_match_torch_func(digits_stream):
    """Convolutions go through torch.func per-example gradients; both paths must agree with it."""
    ctx = make_ctx(digits_stream, model="cnn")
    model = ctx.model
    model.observe_classes((0, 1))
    exp = digits_stream.train[0]
    x, y = exp.inputs[:64], exp.targets[:64]
    ids = torch.zeros(64, dtype=torch.long)

    def nll(logits, label):
        return torch.nn.functional.cross_entropy(logits, label, reduction="none")

    fisher = per_example_importance(model, (x, y, ids), False, lambda logits, t: t, nll, "square",
                                    torch.device("cpu"), chunk=20)
    model.eval()
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    per_example = vmap(grad(lambda ps, xi, yi: nll(functional_call(model, (ps, buffers), (xi[None],)), yi[None])[0]),
                       in_dims=(None, 0, 0))(params, x, y)
    assert any("conv" in type(m).__name__.lower() for m in model.modules())
    for n in params:
        torch.testing.assert_close(fisher[n], per_example[n].square().mean(0), rtol=1e-4, atol=1e-8)



def test_tied_and_reused_linear_layers_fall_back_to_exact_per_example_gradients():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 3)
            self.b.weight = self.a.weight

        def forward(self, x, task_ids=None):
            h = torch.tanh(self.b(torch.tanh(self.a(x))))
            return self.c(torch.tanh(self.a(h)))      # `a` runs twice and shares its weight with `b`

    torch.manual_seed(0)
    model = Tied()
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))

    def nll(logits, label):
        return torch.nn.functional.cross_entropy(logits, label, reduction="none")

    fisher = per_example_importance(model, (x, y, torch.zeros(50, dtype=torch.long)), False, lambda logits, t: t,
                                    nll, "square", torch.device("cpu"), chunk=16)
    params = {n: p.detach() for n, p in model.named_parameters()}
    per_example = vmap(grad(lambda ps, xi, yi: nll(functional_call(model, ps, (xi[None],)), yi[None])[0]),
                       in_dims=(None, 0, 0))(params, x, y)
    assert fisher.keys() == params.keys()
    for n in params:
        torch.testing.assert_close(fisher[n], per_example[n].square().mean(0), rtol=1e-4, atol=1e-8)
