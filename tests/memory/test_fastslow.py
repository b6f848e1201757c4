"""Fast/slow memory: rare-class episodes, fast weights driven by synthetic gradients within an
episode, and a synthetic-gradient module that learns the true gradients."""
import torch

from palimpsest.memory.fastslow import FastSlowMemory, RareClassEpisodes, episode_loss, train_fast_slow


def test_episodes_have_rare_classes_and_count_exposures():
    task = RareClassEpisodes(n_classes=5, length=20, n_rare=2, rare_count=2)
    x, y, exposure, rare = task.sample(16, torch.Generator().manual_seed(0))
    assert x.shape == (16, 20, task.dim)
    for i in range(16):
        counts = torch.bincount(y[i], minlength=5)
        assert (counts[:2] == 2).all() and (counts[2:] >= 1).all()
        for t in range(20):
            assert int(exposure[i, t]) == int((y[i, :t] == y[i, t]).sum())
    assert torch.equal(rare, y < 2)


def test_fast_weights_act_within_an_episode_only_through_synthetic_gradients():
    torch.manual_seed(0)
    task = RareClassEpisodes()
    x, y, _, _ = task.sample(4, torch.Generator().manual_seed(1))
    model = FastSlowMemory(task.dim, 5)
    with torch.no_grad():
        model.synthetic.bias.fill_(0.3)                  # a nonzero predicted gradient
        x[:, 5] = x[:, 0]                                # the same input again, later in the episode
        _, keys, _ = model(x, y)
        model.fast = False
        _, slow_keys, _ = model(x, y)
    assert torch.allclose(keys[0], slow_keys[0])             # nothing written yet: the same key
    assert not torch.allclose(keys[5], keys[0])              # the fast weights moved the key
    assert torch.allclose(slow_keys[5], slow_keys[0])        # without them it stays


def test_training_learns_one_shot_recall_and_the_synthetic_gradients():
    out = train_fast_slow(True, steps=40, batch=16, eval_episodes=64)
    assert out["all_seen"] > 0.5 and out["rare_second_exposure"] > 1 / 5
    x, y, exposure, _ = RareClassEpisodes().sample(2, torch.Generator().manual_seed(2))
    logits, _, _ = FastSlowMemory(RareClassEpisodes().dim, 5)(x, y)
    assert torch.isfinite(episode_loss(logits, y, exposure))


# ------------------------------------------------------------------ the MANN-style model

def test_digit_episodes_are_mann_episodes_with_held_out_classes():
    from palimpsest.memory.fastslow import DigitEpisodes
    train, test = DigitEpisodes(), DigitEpisodes(split="test", n_rare=2, rare_count=2)
    assert len(train.pools) == 28 and len(test.pools) == 12          # digits 0-6 vs 7-9, four rotations each
    x, y, exposure, rare = test.sample(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 50, 64)
    for i in range(8):
        counts = torch.bincount(y[i], minlength=5)
        assert sorted(counts.tolist()) == [2, 2, 15, 15, 16]
        assert torch.equal(torch.bincount(y[i][rare[i]], minlength=5) > 0, counts == 2)
        for t in range(50):
            assert int(exposure[i, t]) == int((y[i, :t] == y[i, t]).sum())
    # held-out images: no test-split input occurs in the training pools
    train_rows = {tuple(r.tolist()) for pool in train.pools for r in pool}
    assert not any(tuple(r.tolist()) in train_rows for r in x[0])


def test_synthetic_gradient_module_learns_the_true_gradient_of_a_fixed_problem():
    from palimpsest.memory.fastslow import SyntheticGradient
    torch.manual_seed(0)
    target = torch.randn(6, 4)
    sg = SyntheticGradient(4 + 6, 6)
    optimizer = torch.optim.Adam(sg.parameters(), lr=1e-2)

    def problem():
        z = torch.randn(64, 4)
        activation = (z @ target.T + 0.5 * torch.randn(64, 6)).requires_grad_()
        loss = 0.5 * ((activation - z @ target.T) ** 2).sum()        # a later layer's loss
        true, = torch.autograd.grad(loss, activation)
        return torch.cat([z, activation], -1), true

    inputs, true = problem()
    assert torch.equal(sg(inputs), torch.zeros_like(true))           # zero-initialised: no gradient predicted
    for _ in range(400):
        inputs, true = problem()
        optimizer.zero_grad()
        SyntheticGradient.regression_loss(sg(inputs), true).backward()
        optimizer.step()
    inputs, true = problem()
    error = SyntheticGradient.regression_loss(sg(inputs), true) / (true ** 2).sum(-1).mean()
    assert error < 0.05


def _nmn_batch(seed=0, batch=3):
    from palimpsest.memory.fastslow import DigitEpisodes
    return DigitEpisodes(length=20).sample(batch, torch.Generator().manual_seed(seed))


def test_fast_weights_start_at_zero_every_episode_and_move_within_it():
    from palimpsest.memory.fastslow import SyntheticGradientMANN
    torch.manual_seed(0)
    model = SyntheticGradientMANN(64, 5, hidden=32, fast=True, fast_lr=0.5)
    with torch.no_grad():
        model.synthetic.net[-1].bias.normal_()                         # a nonzero predicted gradient
    x, y, _, _ = _nmn_batch()
    with torch.no_grad():
        first, trace = model(x, y)
        again, _ = model(x, y)                                         # a second episode after the first
        alone, _ = model(x[1:2], y[1:2])
        model.fast = False
        slow, _ = model(x, y)
        model.fast = True
    assert trace["fast_weights"].abs().sum() > 0                        # the controller adapted in the episode
    assert torch.equal(first, again)                                    # ... and nothing carried to the next
    assert torch.allclose(alone[0], first[1], atol=1e-5)                # nor across the batch
    assert torch.allclose(first[:, 0], slow[:, 0])                      # before any write: the slow controller
    assert not torch.allclose(first[:, 5:], slow[:, 5:])                # after writes the fast weights act


def test_slow_weights_never_receive_the_synthetic_update():
    from palimpsest.memory.fastslow import SyntheticGradient, SyntheticGradientMANN
    torch.manual_seed(0)
    model = SyntheticGradientMANN(64, 5, hidden=32, fast=True, fast_lr=0.5)
    with torch.no_grad():
        model.synthetic.net[-1].bias.normal_()
    slow = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, _, _ = _nmn_batch()
    logits, trace = model(x, y)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in slow.items())   # the fast step is not in θ
    task = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    task.backward(retain_graph=True)
    # the task loss reaches the slow weights but not the synthetic-gradient module (ĝ enters as data) ...
    assert all(p.grad is None for p in model.synthetic.parameters())
    assert model.controller.weight_ih.grad.abs().sum() > 0
    model.zero_grad()
    # ... and SG's regression loss reaches SG only, never the controller
    SyntheticGradient.regression_loss(trace["synthetic"], torch.randn_like(trace["synthetic"])).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for n, p in model.named_parameters()
               if not n.startswith("synthetic."))
    assert model.synthetic.net[-1].weight.grad.abs().sum() > 0


def test_meta_training_learns_one_shot_recall_on_held_out_classes_and_the_true_gradients():
    from palimpsest.memory.fastslow import train_nmn
    out = train_nmn(True, steps=8, batch=4, eval_episodes=8, hidden=32)
    assert set(out) >= {"instance_1", "instance_2", "instance_5", "instance_10", "rare_instance_2",
                        "sg_relative_error_last50"}
    assert 0 <= out["instance_2"] <= 1 and out["sg_relative_error_last50"] < 1.5


def test_local_ablation_steps_on_the_exact_gradient_of_the_labelled_step():
    from palimpsest.memory.fastslow import SyntheticGradientMANN
    torch.manual_seed(0)
    model = SyntheticGradientMANN(64, 5, hidden=32, fast=True, fast_lr=0.5, fast_source="local")
    assert model.synthetic is None
    x, y, _, _ = _nmn_batch()
    _, trace = model(x[:, :2], y[:, :2])
    # after step 1 the fast weights hold one step on ∂ℓ_0/∂u_0, the true gradient of step 0's loss
    fresh = SyntheticGradientMANN(64, 5, hidden=32, fast=False)
    fresh.load_state_dict(model.state_dict())
    slow_logits, slow_trace = fresh(x[:, :1], y[:, :1])
    loss = torch.nn.functional.cross_entropy(slow_logits[:, 0], y[:, 0], reduction="sum")
    u0, = slow_trace["pre_keys"]
    g, = torch.autograd.grad(loss, u0)
    h0 = fresh.controller(torch.cat([x[:, 0], torch.zeros(3, 5)], -1))[0]
    assert torch.allclose(trace["fast_weights"], -0.5 * g.unsqueeze(-1) @ h0.unsqueeze(-2), atol=1e-5)
