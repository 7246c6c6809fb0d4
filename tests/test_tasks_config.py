"""TaskConfig validation: every field checked at the boundary with a message naming it."""

import re

import pytest

from fedgossip.tasks import TaskConfig


def test_defaults_are_valid_and_hashable():
    task = TaskConfig()
    assert (task.dataset, task.model, task.partition, task.init) == ("digits", "mlp", "iid", "own")
    assert hash(task) == hash(TaskConfig())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "mnist", "task.dataset must be one of digits, breast_cancer, synthetic"),
        ("model", "resnet", "task.model must be one of mlp, cnn, linear"),
        (
            "partition",
            "foo",
            "task.partition must be one of iid, dirichlet, shards, quantity; got 'foo'",
        ),
        ("init", "zeros", "task.init must be one of own, shared"),
        ("alpha", 0.0, "task.alpha must be a finite number in (0.0"),
        ("alpha", float("nan"), "task.alpha"),
        ("shards_per_node", 0, "task.shards_per_node must be an integer >= 1"),
        ("local_epochs", 1.5, "task.local_epochs must be an integer"),
        ("batch_size", True, "task.batch_size must be an integer"),
        ("learning_rate", -0.1, "task.learning_rate"),
        ("momentum", 1.0, "task.momentum must be a finite number in [0.0, 1.0)"),
        ("test_fraction", 1.0, "task.test_fraction"),
        ("label_noise", 1.5, "task.label_noise must be a finite number in [0.0, 1.0]"),
        ("label_noise", [0.1, -0.2], "task.label_noise[1]"),
        ("feature_noise", "loud", "task.feature_noise"),
        ("hidden", 0, "task.hidden"),
        ("threads", 0, "task.threads"),
        ("synthetic_classes", 1, "task.synthetic_classes"),
        ("synthetic_samples", 5, "task.synthetic_samples must be an integer >= 40"),
        ("synthetic_features", 0, "task.synthetic_features"),
    ],
)
def test_invalid_field_is_named(field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TaskConfig(**{field: value})


def test_cnn_needs_digits():
    with pytest.raises(ValueError, match=r"task\.model 'cnn' needs task\.dataset 'digits'"):
        TaskConfig(model="cnn", dataset="breast_cancer")


def test_numbers_and_lists_are_normalised():
    task = TaskConfig(alpha=1, label_noise=[0, 0.5], feature_noise=(0.1, 2))
    assert task.alpha == 1.0 and isinstance(task.alpha, float)
    assert task.label_noise == (0.0, 0.5)
    assert task.feature_noise == (0.1, 2.0)


def test_from_dict_accepts_known_keys_and_rejects_unknown():
    assert TaskConfig.from_dict({"model": "linear", "alpha": 0.1}) == TaskConfig(model="linear", alpha=0.1)
    with pytest.raises(ValueError, match=r"unknown key task\.foo"):
        TaskConfig.from_dict({"foo": 1})
