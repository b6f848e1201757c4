"""The shared pieces the seed continual-learning methods build on: the supervised contrastive loss
(checked against a hand-written loop), batch augmentations, cosine logits over the head's class
rows, and the features the classifier adapter returns with the logits."""
import math

import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.data.augment import augment, resized_crop, rotate90, shift
from palimpsest.memory.buffer import ReplayBuffer
from palimpsest.models import create_model
from palimpsest.models.adapters import adapter_for
from palimpsest.models.heads import MASKED_LOGIT, CosineClassifier
from palimpsest.train.losses import supervised_contrastive


def supcon_by_hand(anchors, labels, contrasts=None, contrast_labels=None, t=0.1):
    own = contrasts is None
    contrasts = anchors if own else contrasts
    contrast_labels = labels if contrast_labels is None else contrast_labels
    total, kept = 0.0, 0
    for i in range(len(anchors)):
        others = [j for j in range(len(contrasts)) if not (own and j == i)]
        denominator = sum(math.exp(float(anchors[i] @ contrasts[j]) / t) for j in others)
        positives = [j for j in others if contrast_labels[j] == labels[i]]
        if not positives:
            continue
        total += -sum(float(anchors[i] @ contrasts[p]) / t - math.log(denominator) for p in positives) / len(positives)
        kept += 1
    return total / kept


def test_supervised_contrastive_matches_the_formula():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(7, 5), dim=1)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3])                  # class 3 has no positive: left out
    assert supervised_contrastive(a, y, temperature=0.2).item() == pytest.approx(supcon_by_hand(a, y, t=0.2), rel=1e-5)
    proxies = torch.nn.functional.normalize(torch.randn(4, 5), dim=1)[y]
    got = supervised_contrastive(a, y, proxies, y, temperature=0.09).item()
    assert got == pytest.approx(supcon_by_hand(a, y, proxies, y, t=0.09), rel=1e-5)


def test_augmentations_keep_shape_and_are_seeded():
    x = torch.randn(6, 1, 12, 12)
    for recipe in ("weak", "strong"):
        torch.manual_seed(3)
        first = augment(x, recipe)
        torch.manual_seed(3)
        assert first.shape == x.shape and torch.equal(first, augment(x, recipe))
        assert not torch.equal(first, x)
    assert torch.equal(augment(x, "none"), x)
    # a full-area crop with aspect 1 is (up to interpolation) the image itself
    assert torch.allclose(resized_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0)), x, atol=1e-5)
    assert torch.equal(shift(x, 0), x)
    rotated = rotate90(x)
    assert rotated.shape == (24, 1, 12, 12) and torch.equal(rotated[:6], x)
    with pytest.raises(ConfigError):
        augment(x, "medium")


def test_adapter_returns_features_and_the_same_logits(digits_stream):
    torch.manual_seed(0)
    model = create_model("mlp", stream=digits_stream, hidden=(16,))
    model.observe_classes([0, 1])
    x = digits_stream.train[0].inputs[:5]
    out = adapter_for(model)({"inputs": x, "targets": torch.zeros(5, dtype=torch.long)})
    assert out.features.shape == (5, 16)
    assert torch.equal(out.logits, model(x))


def test_cosine_logits_ignore_weight_norms_and_mask_unseen_classes(digits_stream):
    torch.manual_seed(0)
    model = create_model("mlp", stream=digits_stream, hidden=(16,))
    model.observe_classes([0, 1, 2])
    f = model.features(digits_stream.train[0].inputs[:4])
    before = model.cosine_logits(f, 0.5)
    with torch.no_grad():
        model.head.weight[1] *= 7.0                             # a row's norm changes, its angle does not
    after = model.cosine_logits(f, 0.5)
    assert torch.allclose(before, after, atol=1e-5)
    assert (after[:, 3:] == MASKED_LOGIT).all() and after[:, :3].abs().max() <= 2.0 + 1e-5
    assert torch.equal(CosineClassifier(model, 0.5)(digits_stream.train[0].inputs[:4]), after)


def test_buffer_keeps_features_when_given():
    buffer = ReplayBuffer(4)
    buffer.add(torch.randn(3, 2), torch.tensor([0, 1, 2]), features=torch.ones(3, 5))
    assert buffer.all()["features"].shape == (3, 5)
    plain = ReplayBuffer(4)
    plain.add(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    assert "features" not in plain.data and "logits" not in plain.data
