"""Torch networks for the tasks: an MLP and a LeNet-style CNN for the 8x8 digits."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Two hidden ReLU layers of width `hidden`."""

    def __init__(self, num_features: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(num_features, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of flat feature vectors."""
        return self.net(x)


class DigitsCNN(nn.Module):
    """LeNet-style CNN (two 3x3 conv + 2x2 max-pool stages, two dense layers) for 8x8 images."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of images given as flat 64-vectors."""
        return self.classifier(self.features(x.view(-1, 1, 8, 8)).flatten(1))


def build_module(model: str, num_features: int, num_classes: int, hidden: int) -> nn.Module:
    """Network whose throw-away default initialisation runs on a forked torch RNG, so the global
    random state is left as it was; the caller installs the real initial weights. (Building on
    the meta device instead would import sympy through torch.fx: ~45 MB per process.)"""
    if model == "cnn" and num_features != 64:
        raise ValueError(f"the cnn model needs 64 features (8x8 images); got {num_features}")
    with torch.random.fork_rng(devices=[]):
        return DigitsCNN(num_classes) if model == "cnn" else MLP(num_features, num_classes, hidden)
