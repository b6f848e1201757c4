"""Models created by name: `create_model("mlp", input_shape, n_classes)` or from a stream."""
from __future__ import annotations

from ..core.errors import ConfigError, PalimpsestError
from ..core.registry import MODELS
from . import backbones  # noqa: F401  (registers the backbones)
from .heads import MASKED_LOGIT, Classifier


def create_model(name: str, input_shape=None, n_classes: int | None = None, head: str = "single",
                 task_classes=None, stream=None, mask_unseen: bool = True, **kwargs) -> Classifier:
    """Build backbone `name` with a single head or one head per task.

    Pass `stream` to take the input shape, number of classes and task classes from it.
    """
    if stream is not None:
        input_shape = input_shape or stream.input_shape
        n_classes = n_classes or stream.n_classes
        task_classes = task_classes or stream.task_classes
    if input_shape is None or n_classes is None:
        raise ConfigError("create_model needs the input shape and number of classes",
                          expected="input_shape=(1, 28, 28), n_classes=10, or stream=...",
                          got=f"input_shape={input_shape}, n_classes={n_classes}")
    entry = MODELS.get(name)
    try:
        backbone, feature_dim = entry.obj(tuple(input_shape), **kwargs)
        return Classifier(backbone, feature_dim, n_classes, head, task_classes if head == "multi" else None,
                          mask_unseen=mask_unseen)
    except PalimpsestError:
        raise
    except TypeError as err:
        raise ConfigError(f"bad settings for model {name!r}", expected="the model's keyword arguments",
                          got=kwargs, fix=str(err)) from None
    except (ValueError, RuntimeError) as err:
        raise ConfigError(f"model {name!r} cannot be built with these settings",
                          expected="settings that give every layer a positive size", got=kwargs,
                          fix=f"change the settings ({str(err).splitlines()[0]})") from None


__all__ = ["create_model", "Classifier", "MASKED_LOGIT"]
