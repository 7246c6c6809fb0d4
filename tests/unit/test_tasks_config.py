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
        (
            "dataset",
            "fashion-mnist",
            "task.dataset must be one of digits, breast_cancer, synthetic, gmm-synthetic, mnist-5k, npz, hf, "
            "mnist, prepared",
        ),
        (
            "model",
            "resnet",
            "task.model must be one of mlp, cnn, lenet5, fair-cnn, linear, dp-bayesian-regression, fedgmm or "
            "'package.module:function'",
        ),
        ("model", "my models:net", "task.model must be one of"),
        ("model", "pkg.mod:", "task.model must be one of"),
        ("device", "gpu", "task.device must be one of cpu, cuda, auto; got 'gpu'"),
        (
            "partition",
            "foo",
            "task.partition must be one of iid, dirichlet, shards, quantity, powerlaw, none, "
            "dirichlet-sampling, covariate; got 'foo'",
        ),
        ("init", "zeros", "task.init must be one of own, shared"),
        ("alpha", 0.0, "task.alpha must be a finite number > 0.0; got 0.0"),
        ("alpha", float("nan"), "task.alpha"),
        ("shards_per_node", 0, "task.shards_per_node must be an integer >= 1"),
        ("local_epochs", 1.5, "task.local_epochs must be an integer"),
        ("batch_size", True, "task.batch_size must be an integer"),
        ("learning_rate", -0.1, "task.learning_rate"),
        ("momentum", 1.0, "task.momentum must be a finite number in [0.0, 1.0)"),
        ("weight_decay", -1e-4, "task.weight_decay must be a finite number >= 0.0; got -0.0001"),
        (
            "path",
            "data.npz",
            "task.path applies to the datasets npz, hf, mnist, prepared, dp-regression; "
            "task.dataset is 'digits'",
        ),
        ("image_column", 3, "task.image_column must be a string"),
        ("hf_train_split", "", "task.hf_train_split must be a non-empty string; got ''"),
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


@pytest.mark.parametrize("model", ["cnn", "lenet5"])
def test_image_models_refuse_tabular_datasets(model):
    with pytest.raises(
        ValueError, match=rf"task\.model '{model}' needs images; task\.dataset 'breast_cancer'"
    ):
        TaskConfig(model=model, dataset="breast_cancer")


@pytest.mark.parametrize("dataset", ["npz", "hf", "prepared"])
def test_file_datasets_need_a_path(dataset):
    with pytest.raises(ValueError, match=rf"task\.dataset '{dataset}' needs task\.path"):
        TaskConfig(dataset=dataset)
    assert TaskConfig(dataset=dataset, path="somewhere").path == "somewhere"


def test_a_factory_path_is_a_model():
    assert TaskConfig(model="my_pkg.nets:resnet").model == "my_pkg.nets:resnet"


def test_numbers_and_lists_are_normalised():
    task = TaskConfig(alpha=1, label_noise=[0, 0.5], feature_noise=(0.1, 2))
    assert task.alpha == 1.0 and isinstance(task.alpha, float)
    assert task.label_noise == (0.0, 0.5)
    assert task.feature_noise == (0.1, 2.0)


def test_from_dict_accepts_known_keys_and_rejects_unknown():
    assert TaskConfig.from_dict({"model": "linear", "alpha": 0.1}) == TaskConfig(model="linear", alpha=0.1)
    with pytest.raises(ValueError, match=r"unknown key task\.foo"):
        TaskConfig.from_dict({"foo": 1})
