import pytest
import torch

from palimpsest.core.errors import ConfigError
from palimpsest.models import MASKED_LOGIT, create_model


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet18_slim"])
def test_models_output_global_logits(name):
    model = create_model(name, (1, 28, 28), 10)
    model.observe_classes([0, 1])
    out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 10)
    assert (out[:, 2:] == MASKED_LOGIT).all() and (out[:, :2] != MASKED_LOGIT).all()


def test_resnet_group_norm_has_no_batchnorm():
    model = create_model("resnet18_slim", (1, 28, 28), 10, norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())


def test_multi_head_routes_by_task():
    model = create_model("mlp", (4,), 4, head="multi", task_classes=[(0, 1), (2, 3)])
    model.observe_classes(range(4))
    out = model(torch.randn(2, 4), torch.tensor([0, 1]))
    assert (out[0, 2:] == MASKED_LOGIT).all() and (out[1, :2] == MASKED_LOGIT).all()
    # heads stacked side by side without task ids, because the tasks' classes are disjoint
    assert (model(torch.randn(2, 4)) != MASKED_LOGIT).all()


def test_image_model_on_flat_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs image inputs"):
        create_model("cnn", (40,), 10)


def test_unknown_model_setting():
    with pytest.raises(ConfigError, match="bad settings for model 'mlp'"):
        create_model("mlp", (4,), 2, widths=3)
