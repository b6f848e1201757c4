"""Fast and slow learning in a neural memory network through synthetic gradients: "Fast & Slow
Learning: Incorporating Synthetic Gradients in Neural Memory Controllers" (Fernando, Denman, Sridharan
and Fookes, 2020), with decoupled neural interfaces (Jaderberg et al., "Decoupled Neural Interfaces
using Synthetic Gradients", 2017).

A memory network: a controller (slow weights θ, an MLP) turns each input into a key; the memory stores
(key, label) slots and is read by softmax attention over the stored keys. The loss that tells whether a
write was good arrives only later, when the same class is read again; a synthetic-gradient module
predicts it at write time, ĝ_t = SG(key_t, y_t) ≈ ∂L_future/∂key_t, so the controller can change at once:
its fast weights F (reset every episode, key = c + F c with c = controller(x)) take one step per write,

    F ← F − η_fast ĝ_t c_t^T

while θ learns slowly across episodes by backpropagation, and SG regresses the true gradients
∂L/∂key_t of each episode (the decoupled interface's own loss).

The task (`RareClassEpisodes`): episodes of `n_classes` classes with labels shuffled per episode; each
class is a random prototype in a few signal dimensions hidden among nuisance dimensions (so the
controller must learn what to key on); `n_rare` classes appear only `rare_count` times, the others fill
the episode. At each step the model predicts the label, then sees it. Measured: accuracy at the second
exposure of a rare class (one-shot recall from memory), with and without the fast, synthetic-gradient
updates.

Departures: the paper's controller is an LSTM writing a memory of many slots with learned addressing;
here it is an MLP whose every input is a slot, the fast weights are one linear map on the key, and the
synthetic gradients drive only those fast weights.
"""
from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from ..core.config import Settings, validate


class EpisodeConfig(Settings):
    n_classes: int = Field(5, ge=2)
    length: int = Field(20, ge=4)
    n_rare: int = Field(2, ge=1)
    rare_count: int = Field(2, ge=2, description="appearances of each rare class (the first is unpredictable)")
    signal_dims: int = Field(8, ge=1)
    noise_dims: int = Field(24, ge=0)
    noise: float = Field(0.5, ge=0, description="std of the nuisance dimensions and of each example around its "
                         "prototype (relative to prototypes of std 1)")


class RareClassEpisodes:
    """Episodes with rare classes (see the module docstring); `sample(batch, generator)` returns inputs
    (B, L, d), labels (B, L), and `exposure` (B, L): how many times the label was shown before."""

    def __init__(self, **settings) -> None:
        self.config = validate(EpisodeConfig, settings, "rare-class episodes")
        c = self.config
        if c.n_rare >= c.n_classes or c.n_rare * c.rare_count > c.length - (c.n_classes - c.n_rare):
            from ..core.errors import ConfigError
            raise ConfigError("rare-class episodes do not fit", expected="fewer rare classes than classes and room "
                              "for every frequent class", got=c.model_dump())

    @property
    def dim(self) -> int:
        return self.config.signal_dims + self.config.noise_dims

    def sample(self, batch: int, generator: torch.Generator):
        c = self.config
        prototypes = torch.randn(batch, c.n_classes, c.signal_dims, generator=generator)
        rare_slots = c.n_rare * c.rare_count
        frequent = torch.randint(c.n_rare, c.n_classes, (batch, c.length - rare_slots), generator=generator)
        frequent[:, :c.n_classes - c.n_rare] = torch.arange(c.n_rare, c.n_classes)     # every class appears
        rare = torch.arange(c.n_rare).repeat_interleave(c.rare_count).expand(batch, -1)
        labels = torch.cat([rare, frequent], 1)
        order = torch.rand(batch, c.length, generator=generator).argsort(1)
        labels = labels.gather(1, order)
        # class ids are episode-local: shuffle which prototype each label names
        signal = prototypes.gather(1, labels.unsqueeze(-1).expand(-1, -1, c.signal_dims))
        signal = signal + c.noise * torch.randn(signal.shape, generator=generator)
        nuisance = c.noise * 4 * torch.randn(batch, c.length, c.noise_dims, generator=generator)
        x = torch.cat([signal, nuisance], -1)
        onehot = F.one_hot(labels, c.n_classes)
        exposure = (onehot.cumsum(1) - onehot).gather(2, labels.unsqueeze(-1)).squeeze(-1)
        rare_mask = labels < c.n_rare
        return x, labels, exposure, rare_mask


class FastSlowMemory(nn.Module):
    """Controller (slow), slot memory, synthetic-gradient module and per-episode fast weights."""

    def __init__(self, in_dim: int, n_classes: int, key_dim: int = 16, hidden: int = 64, fast_lr: float = 0.5,
                 fast: bool = True) -> None:
        super().__init__()
        self.n_classes, self.key_dim, self.fast_lr, self.fast = n_classes, key_dim, fast_lr, fast
        self.controller = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, key_dim))
        self.synthetic = nn.Linear(key_dim + n_classes, key_dim)
        nn.init.zeros_(self.synthetic.weight)
        nn.init.zeros_(self.synthetic.bias)
        self.log_beta = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        """Logits (B, L, n_classes) of each step's prediction (made before its label is seen), the keys
        written (a list of L tensors (B, k), the graph's own) and the synthetic gradients (B, L, k)."""
        b, length, _ = x.shape
        fast = x.new_zeros(b, self.key_dim, self.key_dim)
        onehot = F.one_hot(labels, self.n_classes).to(x.dtype)
        logits, keys, synthetic = [], [], []
        beta = self.log_beta.exp()
        for t in range(length):
            c = self.controller(x[:, t])
            key = F.normalize(c + (fast @ c.unsqueeze(-1)).squeeze(-1), dim=-1)
            if t == 0:
                logits.append(x.new_zeros(b, self.n_classes))
            else:
                past = torch.stack(keys, 1)                                       # (B, t, k)
                attention = torch.softmax(beta * (past @ key.unsqueeze(-1)).squeeze(-1), -1)
                probs = (attention.unsqueeze(-1) * onehot[:, :t]).sum(1)
                logits.append(torch.log(probs + 1e-6))
            keys.append(key)
            g = self.synthetic(torch.cat([key, onehot[:, t]], -1))
            synthetic.append(g)
            if self.fast:
                # the decoupled update: the predicted gradient acts now, as data for the slow weights
                fast = fast - self.fast_lr * g.detach().unsqueeze(-1) @ c.detach().unsqueeze(-2)
        return torch.stack(logits, 1), keys, torch.stack(synthetic, 1)


def episode_loss(logits: torch.Tensor, labels: torch.Tensor, exposure: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the steps whose class was shown before (the first exposure is a guess)."""
    seen = exposure > 0
    return F.cross_entropy(logits[seen], labels[seen])


def train_fast_slow(fast: bool, steps: int = 300, batch: int = 32, seed: int = 0, lr: float = 3e-3,
                    eval_episodes: int = 512, **task) -> dict:
    """Train a FastSlowMemory on rare-class episodes (through palimpsest's one loop) and measure
    accuracy at each exposure on held-out episodes; `fast` turns the synthetic-gradient updates on."""
    from ..core.seeding import generator
    from ..train.config import TrainingConfig, build_optimizer
    from ..train.loop import LossHooks, run_loop
    episodes = RareClassEpisodes(**task)
    torch.manual_seed(seed)
    model = FastSlowMemory(episodes.dim, episodes.config.n_classes, fast=fast)
    training = TrainingConfig(optimizer="adam", lr=lr, grad_clip=1.0)
    optimizer = build_optimizer(model.parameters(), training)

    def loss(batch_, values):
        x, y, exposure, _ = batch_
        logits, keys, synthetic = model(x, y)
        task_loss = episode_loss(logits, y, exposure)
        # the synthetic-gradient module regresses the true gradient of the episode's loss w.r.t. each key
        true = torch.stack(torch.autograd.grad(task_loss, keys, retain_graph=True), 1).detach()
        return task_loss + ((synthetic - true * len(keys)) ** 2).sum(-1).mean()

    batches = (episodes.sample(batch, generator(seed, "episodes", i)) for i in range(steps))
    stats = run_loop(LossHooks(loss), optimizer, batches, training)
    x, y, exposure, rare = episodes.sample(eval_episodes, generator(seed, "evaluation"))
    with torch.no_grad():
        model.eval()
        correct = model(x, y)[0].argmax(-1) == y
    out = {"fast": fast, "steps": steps, "seed": seed, "final_train_loss": stats.mean_loss}
    second = exposure == 1
    out["rare_second_exposure"] = float(correct[second & rare].float().mean())
    out["frequent_second_exposure"] = float(correct[second & ~rare].float().mean())
    out["all_seen"] = float(correct[exposure > 0].float().mean())
    return out


__all__ = ["EpisodeConfig", "FastSlowMemory", "RareClassEpisodes", "episode_loss", "train_fast_slow"]
