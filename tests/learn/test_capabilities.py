"""What Core v2's shape carries: a frozen encoder with LoRA adapters through a strategy's `prepare`
(its checkpoint holds only what trains), a Hugging Face causal LM on token batches through the
same loop, composition from a spec, and the loop's options (gradient hooks after unscaling,
accumulation, clipping, schedules)."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from palimpsest.core.errors import ConfigError
from palimpsest.core.registry import STRATEGIES
from palimpsest.data import Stream, TensorSource, class_incremental
from palimpsest.data.scenarios import Experience
from palimpsest.learn import TrainContext, TrainingConfig, make_optimizer, train_step
from palimpsest.models import create_model
from palimpsest.models.adapters import CausalLMAdapter
from palimpsest.run import ResultsDB, load_model, parse_spec, run_experiment
from palimpsest.run.store.files import load_state
from palimpsest.train import LossHooks, run_loop, schedule_factor
from palimpsest.data.batch import Batch

from ..conftest import tiny_spec

peft = pytest.importorskip("peft", reason="the LoRA test needs peft (pip install 'palimpsest[peft]')")


def pretrained_encoder(digits, path):
    """An MLP trained on all of digits; its weights stand in for a pretrained encoder."""
    torch.manual_seed(0)
    model = create_model("mlp", digits.input_shape, digits.n_classes, hidden=(32,))
    model.observe_classes(range(10))
    from palimpsest.train import fit
    fit(model, torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train), TrainingConfig(epochs=5, batch_size=32),
        seed=0)
    save_file({k: v for k, v in model.state_dict().items() if k.startswith("backbone.")}, str(path))
    return model


def test_lora_on_a_frozen_encoder_trains_through_prepare_and_checkpoints_only_the_adapter(digits, tmp_path):
    pretrained_encoder(digits, tmp_path / "encoder.safetensors")
    spec = parse_spec(tiny_spec(model={"name": "mlp", "settings": {"hidden": [32]}, "freeze": ["backbone"],
                                       "weights": str(tmp_path / "encoder.safetensors")},
                                strategies=[{"name": "naive", "plus": [{"name": "lora", "settings": {"r": 2}}]}],
                                training={"epochs": 3}))
    exp = run_experiment(spec, root=tmp_path / "res", progress=False)
    db = ResultsDB(tmp_path / "res")
    run = f"{exp}/naive+lora/seed0"
    saved = load_state(db.file(db.steps(run)[-1]["model_path"]))
    keys = set(saved["model"])
    assert keys and all("lora_" in k or k.startswith("head.") or k == "active" for k in keys), keys
    assert not any("base_layer" in k for k in keys) and saved["frozen_digest"]
    model, _ = load_model(tmp_path / "res", run)
    encoder = load_file(str(tmp_path / "encoder.safetensors"))
    assert torch.equal(model.backbone[1].base_layer.weight, encoder["backbone.1.weight"])   # the base never moved
    assert float(model.backbone[1].lora_B["default"].weight.detach().abs().sum()) > 0                # the adapter did
    rec = db.record(run)
    x = torch.from_numpy(digits.x_test)
    with torch.no_grad():
        acc = float((model(x).argmax(1) == torch.from_numpy(digits.y_test)).float().mean())
    assert acc == pytest.approx(rec.acc["class"][-1] @ [len(e) for e in class_incremental(digits, 5).test] / len(x))
    # loading onto another base is refused
    other = tmp_path / "other.safetensors"
    save_file({k: v + 1 for k, v in encoder.items()}, str(other))
    from palimpsest.run.kinds.learn import rebuild_model
    import yaml
    text = yaml.safe_dump({**yaml.safe_load(db.experiment(exp)["spec_yaml"]),
                           "model": {**spec.model.model_dump(), "weights": str(other)}})
    with pytest.raises(Exception, match="frozen base differs"):
        rebuild_model(db.run(run), text, db.file(db.steps(run)[-1]["model_path"]))


def test_lora_without_linear_layers_under_its_target_is_a_clear_error(digits):
    stream = class_incremental(digits, 5)
    with pytest.raises(ConfigError, match="no linear layer under 'encoder'"):
        STRATEGIES.create("lora", target="encoder").prepare(create_model("mlp", stream=stream, hidden=(8,)))


def token_stream(n=64, length=16, vocab=32):
    """Sequences counting up modulo `vocab` from random starts: next-token prediction a tiny LM can learn."""
    g = torch.Generator().manual_seed(0)
    starts = torch.randint(0, vocab, (n, 1), generator=g)
    ids = (starts + torch.arange(length)) % vocab
    source = TensorSource({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    exp = Experience(source, torch.arange(n), 0, (), np.arange(n))
    return Stream("tokens", "domain", (exp,), (exp,), None, 0, (), (length,))


def test_a_tiny_hugging_face_causal_lm_trains_on_token_batches_through_the_same_loop():
    transformers = pytest.importorskip("transformers", reason="needs transformers (pip install 'palimpsest[hf]')")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=None,
                                     eos_token_id=None, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    model = transformers.GPT2LMHeadModel(config)
    stream = token_stream()
    cfg = TrainingConfig(epochs=30, batch_size=16, optimizer="adam", lr=1e-2)
    ctx = TrainContext(model, make_optimizer(model.parameters(), cfg), stream, cfg, torch.device("cpu"), seed=0,
                       adapter=CausalLMAdapter(model))
    assert not ctx.adapter.observes_classes
    batch = Batch(stream.train[0].batch(torch.arange(16)))
    with torch.no_grad():
        before = float(ctx.task_loss(batch, ctx.output(batch)))
    stats = train_step(ctx, STRATEGIES.create("naive"), stream.train[0])
    with torch.no_grad():
        after = float(ctx.task_loss(batch, ctx.output(batch)))
    assert stats.n_batches == 30 * 4 and after < 0.5 * before
    # our shifted cross-entropy is the model's own loss
    with torch.no_grad():
        own = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert float(own) == pytest.approx(after, rel=1e-5)


def test_strategies_compose_from_the_spec(digits, tmp_path):
    spec = parse_spec(tiny_spec(strategies=[{"name": "er", "settings": {"buffer_size": 50}, "plus": ["lwf"]}, "er"],
                                training={"epochs": 3}))
    exp = run_experiment(spec, root=tmp_path, progress=False)
    db = ResultsDB(tmp_path)
    run = db.run(f"{exp}/er+lwf/seed0")
    import json
    settings = json.loads(run["settings_json"])
    assert settings["plus"][0]["name"] == "lwf" and settings["buffer_size"] == 50
    composed, plain = db.record(run["id"]), db.record(f"{exp}/er/seed0")
    assert not np.array_equal(composed.acc["class"], plain.acc["class"])   # the distillation term acts
    model, _ = load_model(tmp_path, run["id"])
    assert model is not None


# -- the loop's options ------------------------------------------------------------------------------

def _toy(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    return model, x, y


def test_gradient_hooks_see_unscaled_gradients_under_a_grad_scaler():
    seen = {}
    for precision in ("fp32", "fp16"):
        model, x, y = _toy()
        cfg = TrainingConfig(precision=precision, lr=0.1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        norms = []

        def hook(batch, values, model=model, norms=norms):
            norms.append(float(torch.cat([p.grad.flatten() for p in model.parameters()]).norm()))

        run_loop(LossHooks(lambda b, v, m=model: torch.nn.functional.cross_entropy(m(b["inputs"]).float(), b["targets"]),
                           before_step=hook), opt, [Batch(inputs=x, targets=y)], cfg)
        seen[precision] = norms[0]
    # a scaled gradient would be ~2^16 times larger; the hook sees the true one (fp16 rounding aside)
    assert seen["fp16"] == pytest.approx(seen["fp32"], rel=0.02)


def test_accumulation_sums_micro_batch_gradients_into_one_step():
    whole, x, y = _toy()
    split, _, _ = _toy()
    loss = lambda m: (lambda b, v: torch.nn.functional.cross_entropy(m(b["inputs"]), b["targets"]))  # noqa: E731
    stats = run_loop(LossHooks(loss(whole)), torch.optim.SGD(whole.parameters(), lr=0.1), [Batch(inputs=x, targets=y)],
                     TrainingConfig())
    halves = [Batch(inputs=x[:32], targets=y[:32]), Batch(inputs=x[32:], targets=y[32:])]
    acc = run_loop(LossHooks(loss(split)), torch.optim.SGD(split.parameters(), lr=0.1), halves,
                   TrainingConfig(accumulation=2))
    assert stats.n_steps == acc.n_steps == 1 and acc.n_batches == 2
    for p, q in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_clipping_bounds_the_update_and_schedules_shape_the_learning_rate():
    model, x, y = _toy()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    run_loop(LossHooks(lambda b, v: 1000 * torch.nn.functional.cross_entropy(model(b["inputs"]), b["targets"])), opt,
             [Batch(inputs=x, targets=y)], TrainingConfig(grad_clip=0.5))
    moved = torch.cat([(p.detach() - q).flatten() for p, q in zip(model.parameters(), before)]).norm()
    assert float(moved) == pytest.approx(0.5, rel=1e-4)   # lr 1 x a gradient clipped to norm 0.5
    assert opt.param_groups[0]["lr"] == 1.0               # the base rate is restored after the call
    cfg = TrainingConfig(scheduler="cosine", warmup_steps=2)
    factors = [schedule_factor(cfg, t, 10) for t in range(10)]
    assert factors[0] == pytest.approx(1 / 3) and factors[2] == pytest.approx(1.0) and factors[-1] < 0.05
    assert all(a >= b for a, b in zip(factors[2:], factors[3:]))
