"""Data augmentations on batches of tensors, for the methods whose papers train on several views of
an example (contrastive replay, prototype learning, view-batch self-supervision, rotation labels).

Images are (N, C, H, W) tensors in the stream's (standardised) units; flat inputs (N, D) only get
noise. Every random draw comes from torch's global generator, which the runner seeds from the run's
seed and saves with each checkpoint, so a resumed run draws the same augmentations.

    flip               horizontal flip with probability p (torchvision's RandomHorizontalFlip)
    shift              random crop of the image padded by `pad` pixels (RandomCrop(size, padding))
    resized_crop       random crop of scale s in [lo, hi] of the area, aspect ratio in [3/4, 4/3],
                       resized back (RandomResizedCrop), bilinear
    noise              additive Gaussian noise
    rotate90           the four rotations by k * 90 degrees, stacked (k = 0..3, PASS / NAPA-VQ labels)
    augment            a named recipe: "weak" (shift + flip), "strong" (resized crop 0.2-1 + flip +
                       noise, the SimCLR-style view contrastive methods use), "none"

Padding uses the image's minimum (its background in standardised units), not zero.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch.nn import functional as F

from ..core.errors import ConfigError

Recipe = Literal["none", "weak", "strong"]
RECIPES = ("none", "weak", "strong")


def is_image(x: torch.Tensor) -> bool:
    return x.dim() == 4


def flip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    if not is_image(x) or p <= 0:
        return x
    chosen = torch.rand(len(x), device=x.device) < p
    return torch.where(chosen.view(-1, 1, 1, 1), x.flip(3), x)


def shift(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Each image moved by up to `pad` pixels in each direction (a random crop of the padded image)."""
    if not is_image(x) or pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x - x.amin(), (pad, pad, pad, pad)) + x.amin()
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    channels = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channels, rows, cols]


def resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """A random crop covering a fraction in `scale` of each image's area, resized to the image size."""
    if not is_image(x):
        return x
    n = len(x)
    area = torch.empty(n, device=x.device).uniform_(*scale)
    log_ratio = torch.empty(n, device=x.device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)     # fractions of the image's width and height
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(n, device=x.device) * 2 - 1) * (1 - width)
    cy = (torch.rand(n, device=x.device) * 2 - 1) * (1 - height)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2] = width, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin()
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


def noise(x: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    return x + std * torch.randn_like(x) if std > 0 else x


def rotate90(x: torch.Tensor) -> torch.Tensor:
    """(4N, C, H, W): the batch rotated by 0, 90, 180 and 270 degrees, in that order (k-major)."""
    if not is_image(x) or x.shape[2] != x.shape[3]:
        raise ConfigError("rotation labels need square images", expected="inputs shaped (N, C, H, H)",
                          got=tuple(x.shape), fix="use an image dataset, or set the method's rotations to 1")
    return torch.cat([torch.rot90(x, k, (2, 3)) for k in range(4)])


def augment(x: torch.Tensor, recipe: str = "weak") -> torch.Tensor:
    """One random view of every example of `x` (see the module docstring)."""
    if recipe == "none":
        return x
    if recipe == "weak":
        return flip(shift(x, 2)) if is_image(x) else noise(x, 0.1)
    if recipe == "strong":
        return noise(flip(resized_crop(x)), 0.1) if is_image(x) else noise(x, 0.3)
    raise ConfigError("unknown augmentation", expected=" or ".join(repr(r) for r in RECIPES), got=recipe)


__all__ = ["RECIPES", "augment", "flip", "is_image", "noise", "resized_crop", "rotate90", "shift"]
