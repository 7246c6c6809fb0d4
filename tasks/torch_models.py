"""Our torch networks, as registered factories (see `registry`): an MLP, a small CNN, LeNet-5 and
the fair-incentive authors' tanh CNN.

Each is called as factory(input_shape, num_classes, **options) and receives batches shaped
(batch, *input_shape).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional


def _image_shape(model: str, input_shape: tuple[int, ...], smallest: int) -> tuple[int, int, int]:
    """(channels, height, width) of image inputs at least `smallest` pixels high and wide."""
    if len(input_shape) != 3:
        raise ValueError(
            f"the {model} model needs images (channels, height, width); the dataset's examples "
            f"have shape {tuple(input_shape)} (use mlp, linear or your own model)"
        )
    channels, height, width = input_shape
    if min(height, width) < smallest:
        raise ValueError(
            f"the {model} model needs images of at least {smallest}x{smallest}; got {height}x{width}"
        )
    return channels, height, width


class MLP(nn.Module):
    """Two hidden ReLU layers of width `hidden` over the flattened input."""

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
        """Class logits of a batch of examples of any shape."""
        return self.net(x.flatten(1))


class SmallCNN(nn.Module):
    """LeNet-style CNN (two 3x3 conv + 2x2 max-pool stages, two dense layers), sized for the 8x8
    digits and usable on any image of at least 4x4."""

    def __init__(self, channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * (height // 4) * (width // 4), 32), nn.ReLU(), nn.Linear(32, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images."""
        return self.classifier(self.features(x).flatten(1))


class LeNet5(nn.Module):
    """LeNet-5 (6-16-120-84) as in the vanishing-variance authors' code (DFL_torch): 5x5 conv to 6
    channels (padding 2), ReLU, 2x2 max-pool; 5x5 conv to 16, ReLU, 2x2 max-pool; dense 120, 84,
    classes with ReLU between. 28x28 inputs give the authors' 16x5x5 features; other sizes of at
    least 12x12 work too."""

    def __init__(self, channels: int, height: int, width: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        side = [(size // 2 - 4) // 2 for size in (height, width)]
        self.fc1 = nn.Linear(16 * math.prod(side), 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images."""
        x = functional.max_pool2d(functional.relu(self.conv1(x)), 2)
        x = functional.max_pool2d(functional.relu(self.conv2(x)), 2)
        x = functional.relu(self.fc1(x.flatten(1)))
        return self.fc3(functional.relu(self.fc2(x)))


class FairCNN(nn.Module):
    """The fair-incentive authors' MNIST network (CNN_Net in xqlin98/Fair-yet-Equal-CML,
    utils/models_defined.py): 28x28 images zero-padded by 2 to 32x32 (their data loader pads),
    3x3 conv to 64 channels, tanh, 2x2 max-pool; 7x7 conv to 16, tanh, 2x2 max-pool; dense 200,
    tanh; dense classes. Theirs ends in log_softmax under an NLL loss; ours returns the logits
    under cross-entropy, the same loss and gradients."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3)
        self.conv2 = nn.Conv2d(64, 16, 7)
        self.fc1 = nn.Linear(16 * 4 * 4, 200)
        self.fc2 = nn.Linear(200, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of 1x28x28 images."""
        x = functional.pad(x, (2, 2, 2, 2))
        x = functional.max_pool2d(torch.tanh(self.conv1(x)), 2)
        x = functional.max_pool2d(torch.tanh(self.conv2(x)), 2)
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def mlp(input_shape: tuple[int, ...], num_classes: int, *, hidden: int = 64) -> nn.Module:
    """The MLP for inputs of any shape (flattened)."""
    return MLP(math.prod(input_shape), num_classes, hidden)


def cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The small CNN for images of at least 4x4."""
    return SmallCNN(*_image_shape("cnn", input_shape, 4), num_classes)


def lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 for images of at least 12x12 (28x28 as in the paper's MNIST setup)."""
    return LeNet5(*_image_shape("lenet5", input_shape, 12), num_classes)


def fair_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The fair-incentive authors' CNN, for one-channel 28x28 images only (MNIST as it is)."""
    if tuple(_image_shape("fair-cnn", input_shape, 28)) != (1, 28, 28):
        raise ValueError(
            f"the fair-cnn model takes one-channel 28x28 images (MNIST, padded to 32x32 inside); "
            f"the dataset's examples have shape {tuple(input_shape)}"
        )
    return FairCNN(num_classes)
