"""The fair-incentive authors' CNN as the registered model "fair-cnn": its parameter count by hand,
its output against the authors' CNN_Net (their forward, copied, on their zero-padded 32x32
input) with the same weights, 28x28 MNIST taken as it is, other image sizes refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from fedgossip.tasks import TaskConfig, build_learner
from fedgossip.tasks.torch_models import fair_cnn


class AuthorsCNN(nn.Module):
    """CNN_Net of xqlin98/Fair-yet-Equal-CML (utils/models_defined.py), as written there."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 3, 1)
        self.conv2 = nn.Conv2d(64, 16, 7, 1)
        self.fc1 = nn.Linear(4 * 4 * 16, 200)
        self.fc2 = nn.Linear(200, 10)

    def forward(self, x):
        x = x.view(-1, 1, 32, 32)
        x = torch.tanh(self.conv1(x))
        x = functional.max_pool2d(x, 2, 2)
        x = torch.tanh(self.conv2(x))
        x = functional.max_pool2d(x, 2, 2)
        x = x.view(-1, 4 * 4 * 16)
        x = torch.tanh(self.fc1(x))
        x = self.fc2(x)
        return functional.log_softmax(x, dim=1)


@pytest.mark.timeout(30)
def test_parameter_count_and_layer_shapes_are_the_authors():
    model = fair_cnn((1, 28, 28), 10)
    conv1 = 1 * 64 * 3 * 3 + 64  # 640
    conv2 = 64 * 16 * 7 * 7 + 16  # 50,192
    fc1 = 16 * 4 * 4 * 200 + 200  # 51,400: 32 -> conv 30 -> pool 15 -> conv 9 -> pool 4
    fc2 = 200 * 10 + 10  # 2,010
    assert sum(p.numel() for p in model.parameters()) == conv1 + conv2 + fc1 + fc2 == 104242
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == {name: tuple(t.shape) for name, t in AuthorsCNN().state_dict().items()}


@pytest.mark.timeout(30)
def test_output_is_the_authors_log_probabilities_on_their_padded_input():
    torch.manual_seed(0)
    ours, theirs = fair_cnn((1, 28, 28), 10), AuthorsCNN()
    theirs.load_state_dict(ours.state_dict())
    images = torch.rand(5, 1, 28, 28)
    logits = ours(images)
    assert logits.shape == (5, 10)
    padded = torch.stack([nn.ZeroPad2d(2)(image) for image in images])  # their FastMNIST loader
    torch.testing.assert_close(functional.log_softmax(logits, dim=1), theirs(padded))
    labels = torch.tensor([0, 3, 9, 1, 1])
    torch.testing.assert_close(  # cross-entropy on logits = their NLL on log_softmax
        functional.cross_entropy(logits, labels), functional.nll_loss(theirs(padded), labels)
    )


@pytest.mark.timeout(60)
def test_it_trains_on_28x28_mnist_and_refuses_other_sizes():
    learner = build_learner(TaskConfig(dataset="mnist-5k", model="fair-cnn", momentum=0.9), 0, 4, seed=1)
    before = learner.evaluate()[1]
    learner.train()
    after = learner.evaluate()[1]
    assert learner.shapes[0] == (64, 1, 3, 3) and after > max(before, 0.5)
    with pytest.raises(
        ValueError, match=r"task.model 'fair-cnn': the fair-cnn model needs images of at least 28x28"
    ):
        build_learner(TaskConfig(model="fair-cnn"), 0, 1, seed=0)  # the 8x8 digits
    with pytest.raises(ValueError, match=r"takes one-channel 28x28 images .* have shape \(3, 32, 32\)"):
        fair_cnn((3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"have shape \(1, 32, 32\)"):
        fair_cnn((1, 32, 32), 10)
