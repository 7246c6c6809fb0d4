"""FedGMM (`tasks/fedgmm_em.py`, `tasks/fedgmm_learner.py`): the E-step responsibilities and the
M-step updates against a direct computation (scipy's Gaussian density, loops over examples); the
federated EM on IID data recovers the centralised EM fit; the weights a node sends, averaged by
FedAvg's example counts and divided on arrival, are the authors' responsibility-weighted
aggregation; a new node's E-step-only adaptation picks the components its data come from; the
input likelihood flags shifted inputs (AUROC); the novel set lies between the components, where one
Gaussian over all of them fails and the mixture does not; bad component counts are refused naming
the key."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from fedgossip.tasks import TaskConfig, build_learner
from fedgossip.tasks import fedgmm_em as fedgmm
from fedgossip.tasks.covariate import novel_inputs
from fedgossip.tasks.gmm_synthetic import components, draw

SEED = 2


def _mixture(rng: np.random.Generator, n: int = 40, d: int = 3, k: int = 2, m: int = 2):
    x = rng.normal(size=(n, d))
    means = rng.normal(size=(k, d))
    covs = np.stack([a @ a.T + np.eye(d) for a in rng.normal(size=(k, d, d))])
    log_py = np.log(rng.dirichlet(np.ones(2), size=(n, m))[:, :, 0])
    pi = rng.dirichlet(np.ones(k * m)).reshape(k, m)
    return x, means, covs, log_py, pi


@pytest.mark.timeout(30)
def test_e_step_is_the_normalised_product_of_mixing_density_and_likelihood():
    x, means, covs, log_py, pi = _mixture(np.random.default_rng(0))
    log_px = fedgmm.log_gaussian(x, means, covs)
    for i in range(len(x)):
        for k in range(2):
            assert log_px[i, k] == pytest.approx(
                multivariate_normal(means[k], covs[k]).logpdf(x[i]), rel=1e-10
            )
    q = fedgmm.responsibilities(log_px, log_py, np.log(pi))
    for i in range(len(x)):
        joint = np.array(
            [[pi[k, m] * np.exp(log_px[i, k]) * np.exp(log_py[i, m]) for m in range(2)] for k in range(2)]
        )
        np.testing.assert_allclose(q[i], joint / joint.sum(), rtol=1e-10)


@pytest.mark.timeout(30)
def test_m_step_is_the_responsibility_weighted_mean_and_covariance():
    rng = np.random.default_rng(1)
    x, *_ = _mixture(rng)
    q = rng.dirichlet(np.ones(4), size=len(x)).reshape(len(x), 2, 2)
    r = q.sum(axis=2)
    means, covs = fedgmm.gaussian_m_step(x, r, eps=0.1)
    for k in range(2):
        mass = sum(r[i, k] for i in range(len(x))) + 0.1
        mean = sum(r[i, k] * x[i] for i in range(len(x))) / mass
        cov = sum(r[i, k] * np.outer(x[i] - mean, x[i] - mean) for i in range(len(x))) / mass + 0.1 * np.eye(
            3
        )
        np.testing.assert_allclose(means[k], mean, rtol=1e-10)
        np.testing.assert_allclose(covs[k], cov, rtol=1e-10)
    np.testing.assert_allclose(fedgmm.mixing_m_step(q), q.mean(axis=0))


def _em(x: np.ndarray, means: np.ndarray, covs: np.ndarray, log_pi: np.ndarray):
    """One EM iteration of a plain GMM (one learner that predicts nothing: log p(y|x) = 0)."""
    q = fedgmm.responsibilities(fedgmm.log_gaussian(x, means, covs), np.zeros((len(x), 1)), log_pi)
    new_means, new_covs = fedgmm.gaussian_m_step(x, q.sum(axis=2), eps=1e-6)
    return fedgmm.mixing_m_step(q), new_means, new_covs


@pytest.mark.timeout(30)
def test_federated_em_on_iid_data_recovers_the_centralised_fit():
    rng = np.random.default_rng(3)
    truth = np.array([[-3.0, 0.0], [3.0, 1.0], [0.0, 4.0]])
    x = truth[rng.integers(3, size=3000)] + rng.normal(scale=0.7, size=(3000, 2))
    start = (truth + rng.normal(scale=0.5, size=truth.shape), np.repeat(np.eye(2)[None], 3, axis=0))
    pi = np.full((3, 1), 1 / 3)
    central = (pi, *start)
    nodes = np.array_split(rng.permutation(len(x)), 4)  # IID: a random quarter each
    federated = [(pi, *start) for _ in nodes]
    for _ in range(15):
        central = _em(x, central[1], central[2], np.log(central[0]))
        local = [
            _em(x[rows], mu, cov, np.log(p)) for rows, (p, mu, cov) in zip(nodes, federated, strict=True)
        ]
        masses = np.stack([len(rows) * p for rows, (p, _, _) in zip(nodes, local, strict=True)])
        mean, cov, _ = fedgmm.aggregate(
            masses, np.stack([mu for _, mu, _ in local]), np.stack([c for _, _, c in local]), [[0.0]] * 4
        )
        federated = [(p, mean, cov) for p, _, _ in local]  # mixing weights stay local
    np.testing.assert_allclose(federated[0][1], central[1], atol=0.02)
    np.testing.assert_allclose(federated[0][2], central[2], atol=0.05)
    np.testing.assert_allclose(central[1], truth, atol=0.1)


def _task(**extra) -> TaskConfig:
    values = {
        "dataset": "gmm-synthetic",
        "model": "fedgmm",
        "partition": "covariate",
        "shift_groups": 3,
        "synthetic_features": 4,
        "synthetic_samples": 600,
        "init": "shared",
    }
    return TaskConfig(**{**values, **extra})


@pytest.mark.timeout(30)
def test_fedavg_of_the_sent_weights_is_the_authors_responsibility_weighted_aggregation():
    learners = [build_learner(_task(), c, 3, SEED) for c in range(3)]
    for learner in learners:
        learner.train()
    sent = [learner.get_weights() for learner in learners]
    n = np.array([learner.num_examples for learner in learners], float)
    averaged = [sum(n[c] * sent[c][j] for c in range(3)) / n.sum() for j in range(len(sent[0]))]
    receiver = learners[0]
    receiver.assign([*averaged[:-1], sent[0][-1]])
    masses = np.stack([n[c] * sent[c][-1] for c in range(3)])
    plain = [[sent[c][1] / sent[c][0][:, None], sent[c][2] / sent[c][0][:, None, None]] for c in range(3)]
    coefs = [[sent[c][4][m] / sent[c][3][m] for m in range(3)] for c in range(3)]
    mean, cov, merged = fedgmm.aggregate(
        masses, np.stack([p[0] for p in plain]), np.stack([p[1] for p in plain]), coefs
    )
    np.testing.assert_allclose(receiver.means, mean, rtol=1e-9)
    np.testing.assert_allclose(receiver.covs, cov, rtol=1e-9)
    for m in range(3):
        np.testing.assert_allclose(receiver.coef[m], merged[m], rtol=1e-9)
    np.testing.assert_allclose(receiver.mixing, sent[0][-1])  # its own, untouched


@pytest.mark.timeout(30)
def test_a_new_node_adapts_by_the_e_step_alone_to_its_components_and_flags_novel_inputs():
    means, covariance, theta = components(SEED, 3, 4)
    learner = build_learner(_task(gmm_learners=3), 0, 3, SEED)
    learner.means, learner.covs = means.copy(), np.repeat(covariance[None], 3, axis=0)
    signs = np.array([[-1.0, 1.0]])
    learner.coef = 20.0 * theta[:, :, None] * signs  # learner m = component m's rule, sharp
    learner.intercept = -20.0 * (np.einsum("md,md->m", means, theta))[:, None] * signs
    learner.mixing = np.full((3, 3), 1 / 9)
    x, y, component = draw(SEED, 2, 600, 3, 4)
    mine = component != 2  # the new node's data: components 0 and 1 only
    before = np.mean(learner.predict(x[mine]) == y[mine])
    mixing = learner.adapt(x[mine], y[mine], iterations=10)
    assert mixing[2].sum() < 0.02  # the absent component gets (almost) nothing
    assert mixing[0, 0] > 0.4 and mixing[1, 1] > 0.4  # each present one its own learner
    assert np.mean(learner.predict(x[mine]) == y[mine]) >= before
    shifted = x[~mine] + 1.5  # a held-out set with shifted inputs
    assert fedgmm.auroc(learner.novelty(x[mine]), learner.novelty(shifted)) > 0.9


@pytest.mark.timeout(30)
def test_the_novel_set_between_components_fools_one_gaussian_but_not_the_mixture():
    task = _task(synthetic_features=32, shift_groups=3)
    means, covariance, _ = components(SEED, 3, 32)
    x, _, _ = draw(SEED, 1, 900, 3, 32)
    novel = novel_inputs(task, x[:300], (32,), SEED, 0)
    assert novel.shape == (300, 32)
    centre = novel.mean(axis=0)  # the midpoint of two of the components' means
    assert min(np.linalg.norm(centre - (means[i] + means[j]) / 2) for i in range(3) for j in range(i)) < 0.2
    covs = np.repeat(covariance[None], 3, axis=0)
    mixture = fedgmm.log_gaussian  # the true mixture (equal weights) against one Gaussian fitted on x
    one_mean, one_cov = fedgmm.gaussian_m_step(x, np.ones((len(x), 1)), eps=0.0)

    def auroc(log_p) -> float:
        return fedgmm.auroc(-log_p(x), -log_p(novel))

    assert auroc(lambda z: fedgmm.logsumexp(mixture(z, means, covs), axis=1)) > 0.95
    assert auroc(lambda z: mixture(z, one_mean, one_cov)[:, 0]) < 0.5


@pytest.mark.timeout(30)
def test_novel_images_are_reflected_in_the_diagonal_and_novel_features_shifted():
    images = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2 * 3 * 3)  # 2 images, 2 channels, 3x3
    reflected = novel_inputs(_task(dataset="digits"), images, (2, 3, 3), SEED, 0).reshape(2, 2, 3, 3)
    for n in range(2):
        for c in range(2):
            square = images[n].reshape(2, 3, 3)[c]
            by_hand = [[square[j, i] for j in range(3)] for i in range(3)]
            np.testing.assert_array_equal(reflected[n, c], by_hand)
    rows = np.zeros((4, 5))
    moved = novel_inputs(_task(dataset="synthetic"), rows, (5,), SEED, 1)
    assert np.all(moved == moved[0]) and np.std(moved[0]) > 0.3  # one shift for every row


@pytest.mark.timeout(30)
def test_the_embedding_is_the_principal_axes_of_the_global_test_inputs_on_every_node():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + 3.0
    mean, axes = fedgmm.principal_axes(x, 2)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)  # the right singular vectors
    for j in range(2):
        expected = vt[j]
        assert abs(abs(axes[:, j] @ expected) - 1.0) < 1e-9  # the same axis, up to its sign
        assert axes[np.abs(axes[:, j]).argmax(), j] > 0  # the sign fixed
    np.testing.assert_allclose(mean, x.mean(axis=0))
    task = _task(gmm_embedding=2)
    first, second = (build_learner(task, node, 3, SEED) for node in (0, 1))
    assert first.means.shape == (3, 2) and first.covs.shape == (3, 2, 2) and first.coef.shape == (3, 4, 2)
    mean, axes = fedgmm.principal_axes(first.data.x_test.astype(np.float64), 2)
    inputs = first.data.x_train.astype(np.float64)
    np.testing.assert_allclose(first.embed(inputs), (inputs - mean) @ axes)
    np.testing.assert_allclose(second.embed(inputs), first.embed(inputs))  # the same on every node
    with pytest.raises(ValueError, match=r"task\.gmm_embedding = 5 is more than the 4 features"):
        build_learner(_task(gmm_embedding=5), 0, 3, SEED)


@pytest.mark.timeout(30)
def test_auroc_against_a_direct_count():
    rng = np.random.default_rng(5)
    inside, outside = rng.normal(size=30), rng.normal(1.0, size=20)
    pairs = [(o > i) + 0.5 * (o == i) for o in outside for i in inside]
    assert fedgmm.auroc(inside, outside) == pytest.approx(np.mean(pairs))


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("values", "message"),
    [({"gmm_components": 0}, "task.gmm_components"), ({"gmm_learners": 0}, "task.gmm_learners")],
)
def test_zero_components_or_learners_are_refused_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        _task(**values)


@pytest.mark.timeout(30)
def test_more_components_than_examples_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"task.gmm_components = 500 is more than node 0's \d+ training"):
        build_learner(_task(gmm_components=500), 0, 3, SEED)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("setting", ["quick", "default", "full"])
def test_every_run_of_the_fedgmm_reproduction_is_a_valid_config(setting):
    from fedgossip.launcher.experiments.papers import FEDGMM
    from fedgossip.launcher.experiments.reproduce import plan

    planned = plan("fedgmm", setting)
    assert not planned.skipped
    seeds = FEDGMM.settings[setting].seeds
    assert len(planned.runs) == len(FEDGMM.methods_of(setting)) * seeds
    local = [run for run in planned.runs if run.name.startswith("local")]
    assert all(run.config.strategy.params["own_weight"] == 1.0 for run in local)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("setting", ["quick", "default", "full"])
def test_every_run_of_the_rotated_mnist_reproduction_is_a_valid_config(setting, tmp_path, monkeypatch):
    from fedgossip.launcher.experiments.papers import FEDGMM_MNIST
    from fedgossip.launcher.experiments.reproduce import plan

    (tmp_path / "mnist.npz").touch()  # the config asks for a local copy only; nothing reads it here
    monkeypatch.setenv("FEDGOSSIP_DATA", str(tmp_path))
    planned = plan("fedgmm-mnist", setting)
    assert not planned.skipped
    assert len(planned.runs) == len(FEDGMM_MNIST.methods_of(setting)) * FEDGMM_MNIST.settings[setting].seeds
    tasks = [run.config.task for run in planned.runs]
    assert all(task.gmm_embedding == 32 and task.dataset == "mnist" for task in tasks)


@pytest.mark.timeout(30)
def test_a_covariate_partition_of_mnist_without_a_local_copy_is_refused_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDGOSSIP_DATA", str(tmp_path))  # no mnist.npz there
    with pytest.raises(ValueError, match=r"task\.partition 'covariate' needs a dataset the nodes load"):
        TaskConfig(dataset="mnist", model="fedgmm", partition="covariate", shift_groups=2)
