"""Fast and slow learning in a neural memory network through synthetic gradients: "Fast & Slow
Learning: Incorporating Synthetic Gradients in Neural Memory Controllers" (Fernando, Denman, Sridharan
and Fookes, 2020, arXiv 2011.05438), with decoupled neural interfaces (Jaderberg et al., "Decoupled
Neural Interfaces using Synthetic Gradients", ICML 2017) and the memory-augmented neural network of
Santoro et al. ("Meta-Learning with Memory-Augmented Neural Networks", ICML 2016).

Two models live here.

**The MANN-style model** (`SyntheticGradientMANN`, `DigitEpisodes`, `train_nmn`), the one that follows
the papers. Meta-learning as in Santoro et al.: an episode shows images of `n_classes` classes drawn
fresh, with episode-local labels, one at a time; the label of step t is given as input at step t+1
(one step late), so the model must bind each label to the image it saw before. Classes are the ten
digits of scikit-learn's 8x8 digits under the four 90-degree rotations (40 classes, as Santoro et al.
rotate Omniglot characters to make new classes); episodes for training draw from digits 0-6 (28
classes), held-out test episodes from digits 7-9 (12 classes never seen in training). An LSTM
controller reads [x_t, onehot(y_{t-1})] and emits a key k_t, a sharpening β_t and a write gate α_t.
The memory is read by content (softmax of β_t times the cosine similarity to the stored keys) and
written with MANN's least-recently-used access (LRUA):

    w^u_t  = γ w^u_{t-1} + w^r_t + w^w_t                        usage
    w^lu_t = one-hot of the least-used slot
    w^w_t  = σ(α_t) w^r_{t-1} + (1 − σ(α_t)) w^lu_{t-1}         write: the slot just read, or a fresh one
    M_t    = M_{t-1} (least-used slot erased) + w^w_t k^T

and the prediction is softmax(W_o [h_t, r_t]) with r_t the read vector.

The decoupled, fast path (Fernando et al.): a synthetic-gradient module SG (Jaderberg et al.'s
conditional DNI: it sees the controller's state, its key, what it read, its prediction, the label and
the memory's keys stored under that label) predicts the gradient of the
episode's future loss with respect to the controller's key pre-activation u_t, ĝ_t = SG(h_t, k_t, y_t)
≈ ∂L/∂u_t. As soon as the label arrives (the write of step t), the controller takes a gradient step
on it, without waiting for the loss: its fast weights ΔW (per episode, reset to zero at the start of
every episode; u_t = (W_k + ΔW) h_t + b) move by

    ΔW ← ΔW − η_fast ĝ_t h_t^T

so later keys of the same episode, rare classes included, come from an adapted controller. The slow
weights θ (LSTM, W_k, W_o) learn across episodes by backpropagation through time of the true loss;
the fast step enters their graph as data (ĝ and h detached), so the synthetic gradient never updates
θ; SG regresses the true gradients ∂L/∂u_t of each episode (the decoupled interface's own loss,
applied only to SG's parameters). `fast=False` is the plain NMN, the paper's baseline; `fast_source="local"` is an ablation whose fast
step uses the exact gradient of the labelled step's own loss (no future part) instead of SG's.
Measured (benchmarks/bench_fastslow.py, docs/FEATURES.md): the fast path did not help on our task.

Departures: the paper's full text was not available to us (only its abstract), so what the fast path
updates follows Jaderberg et al.'s DNI read literally: only the controller's key projection W_k has
fast weights (not the whole LSTM); η_fast is fixed, not learned; the memory stores the label with the
key (a value row per slot written one step late, when the label arrives) instead of MANN's single
memory matrix, so the read returns a label distribution; one read head; 8x8 digits with rotations
instead of Omniglot (20x20 characters, 1600 classes), 5-class episodes of 50 steps, a few minutes
of training on one CPU thread instead of 10^5 episodes.

**The simple slot memory** (`FastSlowMemory`, `RareClassEpisodes`, `train_fast_slow`), the first
version kept for its callers: an MLP controller keys each synthetic input into a slot memory read by
attention over the stored keys; fast weights F (key = c + F c) step on ĝ_t = SG(key_t, y_t) at
write time. Its task: synthetic prototypes in signal dimensions hidden among nuisance dimensions,
`n_rare` classes shown only `rare_count` times; each step predicts the label, then sees it.
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


# ------------------------------------------------------------------ the MANN-style model

class DigitEpisodeConfig(Settings):
    n_classes: int = Field(5, ge=2, description="classes per episode, drawn fresh; labels are episode-local")
    length: int = Field(50, ge=4)
    n_rare: int = Field(0, ge=0, description="classes shown only `rare_count` times (0: every class equally often)")
    rare_count: int = Field(2, ge=1)
    split: str = Field("train", pattern="^(train|test)$", description="train: digits 0-6, test: held-out "
                       "digits 7-9 (each under four rotations)")


class DigitEpisodes:
    """MANN-style episodes (Santoro et al. 2016) on scikit-learn's digits: a class is a digit under one
    of four 90-degree rotations; training episodes use digits 0-6 (28 classes), test episodes the
    held-out digits 7-9 (12 classes). `sample(batch, generator)` returns inputs (B, L, 64), episode
    labels (B, L), `exposure` (B, L): how often the label was shown before, and `rare` (B, L): the
    step's class is one of the rare ones. The label is fed to the model one step late (`train_nmn`)."""

    TRAIN_DIGITS, TEST_DIGITS = tuple(range(7)), (7, 8, 9)

    def __init__(self, **settings) -> None:
        self.config = validate(DigitEpisodeConfig, settings, "digit episodes")
        c = self.config
        digits = self.TRAIN_DIGITS if c.split == "train" else self.TEST_DIGITS
        if c.n_classes > 4 * len(digits) or c.n_rare >= c.n_classes or \
                c.length < c.n_rare * c.rare_count + (c.n_classes - c.n_rare):
            from ..core.errors import ConfigError
            raise ConfigError("digit episodes do not fit", expected=f"at most {4 * len(digits)} classes in the "
                              f"{c.split} split, fewer rare classes than classes and room for every class",
                              got=c.model_dump())
        from sklearn.datasets import load_digits as sklearn_digits
        bunch = sklearn_digits()
        images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
        target = torch.tensor(bunch.target)
        self.pools = [torch.rot90(images[target == d], k, (1, 2)).reshape(-1, 64) for d in digits for k in range(4)]

    @property
    def dim(self) -> int:
        return 64

    def counts(self) -> list[int]:
        """How often each episode class appears: rare ones first, the rest share the remaining steps."""
        c = self.config
        rest, frequent = c.length - c.n_rare * c.rare_count, c.n_classes - c.n_rare
        return [c.rare_count] * c.n_rare + [rest // frequent + (i < rest % frequent) for i in range(frequent)]

    def sample(self, batch: int, generator: torch.Generator):
        c = self.config
        base = torch.repeat_interleave(torch.arange(c.n_classes), torch.tensor(self.counts()))
        xs, ys = [], []
        for _ in range(batch):
            classes = torch.randperm(len(self.pools), generator=generator)[:c.n_classes]
            order = torch.randperm(c.length, generator=generator)
            local = base[order]                                   # episode class index per step (rare < n_rare)
            labels = torch.randperm(c.n_classes, generator=generator)[local]   # shuffled episode labels
            x = torch.stack([self.pools[int(classes[k])][int(torch.randint(len(self.pools[int(classes[k])]), (1,),
                                                                              generator=generator))]
                             for k in local.tolist()])
            xs.append(x)
            ys.append(torch.stack([labels, local]))
        x, both = torch.stack(xs), torch.stack(ys)
        labels, local = both[:, 0], both[:, 1]
        onehot = F.one_hot(labels, c.n_classes)
        exposure = (onehot.cumsum(1) - onehot).gather(2, labels.unsqueeze(-1)).squeeze(-1)
        return x, labels, exposure, local < c.n_rare


class SyntheticGradient(nn.Module):
    """Conditional synthetic-gradient module (Jaderberg et al. 2017, cDNI): predicts ∂L/∂u from local
    information only (`inputs`: the activation and its context, the label among them). Zero-initialised
    as in the paper, so it starts by predicting no gradient. `regression_loss` is its own objective:
    the squared error to the true gradient, reaching only this module's parameters."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs.detach())

    @staticmethod
    def regression_loss(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
        return ((predicted - true.detach()) ** 2).sum(-1).mean()


class SyntheticGradientMANN(nn.Module):
    """An LSTM controller with a content-addressed, LRUA-written slot memory (Santoro et al. 2016) and,
    with `fast=True`, per-episode fast weights on the controller's key projection that step on
    synthetic gradients at write time (Fernando et al. 2020); see the module docstring.

    `forward(x, labels)` takes inputs (B, L, d) and the labels (B, L) (each fed one step late) and
    returns the logits (B, L, C) and a trace: `pre_keys` (the u_t of the graph, for the true
    gradients), `synthetic` (B, L, key_dim) (the predicted gradients, None without `fast`) and
    `fast_weights` (the episode's last ΔW)."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 128, key_dim: int = 32, slots: int = 64,
                 gamma: float = 0.95, fast: bool = True, fast_lr: float = 0.1, fast_source: str = "synthetic") -> None:
        super().__init__()
        if fast_source not in ("synthetic", "local"):
            from ..core.errors import ConfigError
            raise ConfigError("unknown source of the fast gradient", expected="'synthetic' or 'local'",
                              got=fast_source, fix="use fast_source='synthetic' (the paper) or 'local' (ablation)")
        self.n_classes, self.key_dim, self.slots, self.gamma = n_classes, key_dim, slots, gamma
        self.fast, self.fast_lr, self.fast_source = fast, fast_lr, fast_source
        self.controller = nn.LSTMCell(in_dim + n_classes, hidden)
        self.key = nn.Linear(hidden, key_dim)              # W_k, b: the layer with fast weights
        self.gates = nn.Linear(hidden, 2)                  # sharpening β_t and write gate α_t
        self.output = nn.Linear(hidden + n_classes, n_classes)
        # SG sees what the controller sees at write time: its state, its key, what it read (keys and
        # labels), its prediction, the label that just arrived and the memory's keys stored under it
        self.synthetic = SyntheticGradient(hidden + 3 * key_dim + 3 * n_classes, key_dim) \
            if fast and fast_source == "synthetic" else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        b, length, _ = x.shape
        onehot = F.one_hot(labels, self.n_classes).to(x.dtype)
        h = x.new_zeros(b, self.controller.hidden_size)
        c = torch.zeros_like(h)
        keys_mem = x.new_zeros(b, self.slots, self.key_dim)
        values_mem = x.new_zeros(b, self.slots, self.n_classes)
        usage = x.new_zeros(b, self.slots)
        read_w = x.new_zeros(b, self.slots)
        least_used = F.one_hot(torch.zeros(b, dtype=torch.long), self.slots).to(x.dtype)
        fast_w = x.new_zeros(b, self.key_dim, self.controller.hidden_size)        # reset every episode
        logits, pre_keys, synthetic = [], [], []
        previous = None                     # (h, key, what it read, memory) of the last step, waiting for its label
        local_prev = None                   # what the `local` ablation recomputes the last step's loss from
        for t in range(length):
            y_prev = onehot[:, t - 1] if t else x.new_zeros(b, self.n_classes)
            h, c = self.controller(torch.cat([x[:, t], y_prev], -1), (h, c))
            beta_logit, alpha_logit = self.gates(h).unbind(-1)
            if previous is not None:
                h_prev, key_prev = previous[:2]
                if self.fast and self.synthetic is not None:
                    # the label of step t-1 has arrived: the decoupled, fast step of the controller
                    g = self.synthetic(self._sg_inputs(previous, y_prev))
                    synthetic.append(g)
                    fast_w = fast_w - self.fast_lr * g.detach().unsqueeze(-1) @ h_prev.detach().unsqueeze(-2)
                elif self.fast:
                    # ablation: the exact gradient of that step's own loss (no future part)
                    g = self._local_gradient(local_prev, y_prev)
                    fast_w = fast_w - self.fast_lr * g.detach().unsqueeze(-1) @ h_prev.detach().unsqueeze(-2)
                # LRUA write of (key, label) of step t-1
                write_w = torch.sigmoid(alpha_logit).unsqueeze(-1) * read_w + \
                    (1 - torch.sigmoid(alpha_logit)).unsqueeze(-1) * least_used
                keep = (1 - least_used).unsqueeze(-1)
                keys_mem = keys_mem * keep + write_w.unsqueeze(-1) * key_prev.unsqueeze(1)
                values_mem = values_mem * keep + write_w.unsqueeze(-1) * y_prev.unsqueeze(1)
            else:
                write_w = torch.zeros_like(usage)
            u = self.key(h) + (fast_w @ h.unsqueeze(-1)).squeeze(-1)
            pre_keys.append(u)
            key, read_w, read, step_logits = self._read(u, beta_logit, keys_mem, values_mem, h)
            logits.append(step_logits)
            local_prev = (u, beta_logit, keys_mem, values_mem, h)
            usage = self.gamma * usage + read_w + write_w
            least_used = F.one_hot(usage.detach().argmin(-1), self.slots).to(x.dtype)
            previous = (h, key, read_w, keys_mem, values_mem, read, torch.softmax(logits[-1], -1))
        if self.synthetic is not None:                      # the last step's label closes the episode
            synthetic.append(self.synthetic(self._sg_inputs(previous, onehot[:, -1])))
        trace = {"pre_keys": pre_keys, "synthetic": torch.stack(synthetic, 1) if synthetic else None,
                 "fast_weights": fast_w}
        return torch.stack(logits, 1), trace


    def _read(self, u, beta_logit, keys_mem, values_mem, h):
        """Content read (softmax of the sharpened cosine similarity) and the step's logits."""
        key = torch.tanh(u)
        similarity = F.cosine_similarity(key.unsqueeze(1), keys_mem, dim=-1, eps=1e-6)
        read_w = torch.softmax((1 + F.softplus(beta_logit)).unsqueeze(-1) * 10 * similarity, -1)
        read = (read_w.unsqueeze(-1) * values_mem).sum(1)
        return key, read_w, read, self.output(torch.cat([h, read], -1))

    def _local_gradient(self, local_prev, label: torch.Tensor) -> torch.Tensor:
        """∂ℓ_t/∂u_t of one step's own loss, recomputed on detached values (the `local` ablation)."""
        u, beta_logit, keys_mem, values_mem, h = (v.detach() for v in local_prev)
        with torch.enable_grad():
            u = u.requires_grad_()
            logits = self._read(u, beta_logit, keys_mem, values_mem, h)[-1]
            loss = F.cross_entropy(logits, label.argmax(-1), reduction="sum")
            return torch.autograd.grad(loss, u)[0]

    @staticmethod
    def _sg_inputs(previous, label: torch.Tensor) -> torch.Tensor:
        h, key, read_w, keys_mem, values_mem, read, prediction = previous
        read_keys = (read_w.unsqueeze(-1) * keys_mem).sum(1)
        under_label = (values_mem @ label.unsqueeze(-1))                      # (B, slots, 1)
        label_keys = (under_label * keys_mem).sum(1) / (under_label.sum(1) + 1e-6)
        return torch.cat([h, key, read_keys, label_keys, read, prediction, label], -1)


def presentation_accuracy(correct: torch.Tensor, exposure: torch.Tensor, mask: torch.Tensor | None = None,
                          presentations=(1, 2, 5, 10)) -> dict:
    """Santoro et al.'s metric: accuracy at the n-th presentation of a class within its episode."""
    out = {}
    for n in presentations:
        sel = exposure == n - 1
        if mask is not None:
            sel = sel & mask
        out[f"instance_{n}"] = float(correct[sel].float().mean()) if sel.any() else float("nan")
    return out


def train_nmn(fast: bool, steps: int = 600, batch: int = 16, seed: int = 0, lr: float = 1e-3,
              fast_lr: float = 0.1, eval_episodes: int = 256, hidden: int = 128, rare_count: int = 2,
              synthetic_weight: float = 1.0, fast_source: str = "synthetic") -> dict:
    """Meta-train a SyntheticGradientMANN (`fast`: with the synthetic-gradient path) on digit episodes
    through palimpsest's one loop, alternating balanced episodes (5 classes x 10) and rare-class
    episodes (2 of the 5 classes shown only `rare_count` times), then measure on held-out classes:
    accuracy at the 1st/2nd/5th/10th presentation (balanced episodes) and at a rare class's 2nd
    presentation (rare-class episodes). `fast_source="local"` is the ablation whose fast step uses the
    exact gradient of the labelled step's own loss instead of a synthetic one."""
    import time

    from ..core.seeding import generator
    from ..train.config import TrainingConfig, build_optimizer
    from ..train.loop import LossHooks, run_loop
    balanced, rare = DigitEpisodes(), DigitEpisodes(n_rare=2, rare_count=rare_count)
    torch.manual_seed(seed)
    model = SyntheticGradientMANN(64, 5, hidden=hidden, fast=fast, fast_lr=fast_lr, fast_source=fast_source)
    synthetic = model.synthetic is not None
    training = TrainingConfig(optimizer="adam", lr=lr, grad_clip=1.0)
    optimizer = build_optimizer(model.parameters(), training)
    sg_errors = []

    def loss(batch_, values):
        x, y, _, _ = batch_
        logits, trace = model(x, y)
        task = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        if synthetic:
            # capture the true ∂L/∂u_t during the loop's backward; SG regresses them in before_step
            scale = y.numel()                              # per-episode gradients, independent of batch size
            values["true"] = [None] * len(trace["pre_keys"])
            for t, u in enumerate(trace["pre_keys"]):
                u.register_hook(lambda g, t=t: values["true"].__setitem__(t, g * scale))
            values["synthetic"] = trace["synthetic"]
        return task

    def before_step(batch_, values):
        if synthetic:
            true = torch.stack(values["true"], 1)
            sg_loss = SyntheticGradient.regression_loss(values["synthetic"], true)
            (synthetic_weight * sg_loss).backward()
            sg_errors.append(float(sg_loss.detach()) / max(float((true ** 2).sum(-1).mean()), 1e-12))

    def batches():
        for i in range(steps):
            yield (balanced if i % 2 == 0 else rare).sample(batch, generator(seed, "nmn-episodes", i))

    start = time.perf_counter()
    stats = run_loop(LossHooks(loss, before_step=before_step), optimizer, batches(), training)
    seconds = time.perf_counter() - start
    out = {"fast": fast, "fast_source": fast_source if fast else None, "steps": steps, "batch": batch, "seed": seed,
           "fast_lr": fast_lr, "hidden": hidden,
           "final_train_loss": stats.mean_loss, "train_seconds": round(seconds, 1)}
    if synthetic:
        tail = sg_errors[-50:]
        out["sg_relative_error_last50"] = sum(tail) / len(tail)
    model.eval()
    for split in ("test", "train"):
        prefix = "" if split == "test" else "train_classes_"
        episodes = DigitEpisodes(split=split)
        x, y, exposure, _ = episodes.sample(eval_episodes, generator(seed, "nmn-evaluation", split))
        with torch.no_grad():
            correct = model(x, y)[0].argmax(-1) == y
        out.update({prefix + k: v for k, v in presentation_accuracy(correct, exposure).items()})
        episodes = DigitEpisodes(split=split, n_rare=2, rare_count=rare_count)
        x, y, exposure, is_rare = episodes.sample(eval_episodes, generator(seed, "nmn-evaluation-rare", split))
        with torch.no_grad():
            correct = model(x, y)[0].argmax(-1) == y
        out[prefix + "rare_instance_2"] = presentation_accuracy(correct, exposure, is_rare, (2,))["instance_2"]
        out[prefix + "frequent_instance_2"] = presentation_accuracy(correct, exposure, ~is_rare, (2,))["instance_2"]
    return out


__all__ = ["DigitEpisodeConfig", "DigitEpisodes", "EpisodeConfig", "FastSlowMemory", "RareClassEpisodes",
           "SyntheticGradient", "SyntheticGradientMANN", "episode_loss", "presentation_accuracy", "train_fast_slow",
           "train_nmn"]
