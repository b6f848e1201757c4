"""Backbones created by name (timm's create_model pattern)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..core.errors import ConfigError
from ..core.registry import MODELS


@MODELS.register("mlp", inputs="any shape (flattened)")
def mlp(input_shape: tuple[int, ...], hidden: tuple[int, ...] = (256, 256), dropout: float = 0.0):
    """Multi-layer perceptron with ReLU (the MLP of the permuted/split MNIST literature)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = int(math.prod(input_shape))
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    return nn.Sequential(*layers), width


@MODELS.register("flatten", inputs="any shape (flattened)")
def flatten(input_shape: tuple[int, ...]):
    """No learned encoder: the flattened input is the feature vector (a fixed, parameter-free encoder;
    with a single head, a linear classifier on the raw inputs)."""
    return nn.Flatten(), int(math.prod(input_shape))


def _need_image(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3:
        raise ConfigError(f"model {name!r} needs image inputs", expected="input shape (channels, height, width)",
                          got=tuple(input_shape), fix="use model 'mlp' for flat inputs such as MNIST-1D")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError("unknown norm", expected="'batch', 'group' or 'none'", got=kind,
                      fix="use norm='group' for DP-SGD (Opacus rejects BatchNorm)")


@MODELS.register("cnn", inputs="images (C, H, W)")
def cnn(input_shape: tuple[int, ...], channels: tuple[int, int] = (32, 64), hidden: int = 128,
        norm: str = "none"):
    """Two conv-ReLU-maxpool blocks and a hidden linear layer (a small CNN for 28x28 images)."""
    _need_image("cnn", input_shape)
    c1, c2 = channels
    body = nn.Sequential(
        nn.Conv2d(input_shape[0], c1, 3, padding=1), _norm(norm, c1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1), _norm(norm, c2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    with torch.no_grad():
        flat = body(torch.zeros(1, *input_shape)).shape[1]
    return nn.Sequential(body, nn.Linear(flat, hidden), nn.ReLU()), hidden


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _norm(norm, cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.n1(self.conv1(x)))
        return torch.relu(self.n2(self.conv2(out)) + self.shortcut(x))


@MODELS.register("resnet18_slim", inputs="images (C, H, W)")
def resnet18_slim(input_shape: tuple[int, ...], width: int = 20, norm: str = "batch"):
    """Reduced ResNet-18 (nf=20) of "Gradient Episodic Memory for Continual Learning" (2017), with
    BatchNorm or GroupNorm."""
    _need_image("resnet18_slim", input_shape)
    layers: list[nn.Module] = [nn.Conv2d(input_shape[0], width, 3, 1, 1, bias=False), _norm(norm, width), nn.ReLU()]
    cin = width
    for i, mult in enumerate((1, 2, 4, 8)):
        stride = 1 if i == 0 else 2
        layers += [_BasicBlock(cin, width * mult, stride, norm), _BasicBlock(width * mult, width * mult, 1, norm)]
        cin = width * mult
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin
