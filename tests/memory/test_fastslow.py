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
