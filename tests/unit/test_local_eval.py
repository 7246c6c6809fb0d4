"""task.eval (per-node evaluation): each node's local test split is held out of its own partition
(disjoint from what it trains on, drawn from the seed); "local" scores it as the test set, "both"
beside the global one; the records carry `local_accuracy` (the kept model's accuracy on that
split) and the summary and comparison its mean and worst node; bad values exit 2 naming the key."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from fedgossip.config import load_config
from fedgossip.launcher.cli import app
from fedgossip.launcher.experiments.run import run_experiment
from fedgossip.reports import read_records
from fedgossip.reports.compare import compare
from fedgossip.tasks import TaskConfig, build_learner, node_dataset

NODES, SEED = 3, 5


def _rows(x: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in x}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["local", "both"])
def test_the_local_split_is_held_out_of_the_nodes_own_partition(how):
    whole = node_dataset(TaskConfig(partition="dirichlet"), 1, NODES, SEED)
    split = node_dataset(TaskConfig(partition="dirichlet", eval=how), 1, NODES, SEED)
    x_local, y_local = (split.x_test, split.y_test) if how == "local" else (split.x_local, split.y_local)
    assert len(y_local) == round(0.2 * len(whole.y_train))
    assert len(split.y_train) + len(y_local) == len(whole.y_train)
    assert _rows(split.x_train) | _rows(x_local) == _rows(whole.x_train)
    assert not _rows(split.x_train) & _rows(x_local)
    # its own distribution: the node's label counts, not the global test set's
    together = np.bincount(np.concatenate([split.y_train, y_local]), minlength=10)
    assert together.tolist() == np.bincount(whole.y_train, minlength=10).tolist()
    if how == "both":
        np.testing.assert_array_equal(split.x_test, whole.x_test)


@pytest.mark.timeout(30)
def test_local_accuracy_is_the_models_accuracy_on_the_local_split():
    learner = build_learner(TaskConfig(partition="dirichlet", eval="both", model="linear"), 0, NODES, SEED)
    learner.train()
    data = learner.data
    expected = np.mean(learner.predict(data.x_local) == data.y_local)
    assert learner.local_accuracy(0.123) == pytest.approx(expected, abs=1e-12)
    local = build_learner(TaskConfig(partition="dirichlet", eval="local", model="linear"), 0, NODES, SEED)
    assert local.local_accuracy(0.123) == 0.123  # the test set is the local split
    assert build_learner(TaskConfig(model="linear"), 0, NODES, SEED).local_accuracy(0.5) is None


@pytest.mark.timeout(60)
def test_records_summary_and_comparison_carry_the_local_accuracies(tmp_path):
    """Flower in process (gossip records: tests/e2e/test_fedgmm_e2e.py's summaries)."""
    config = load_config(
        None,
        [
            'experiment.mode="flower"',
            'flower.engine="inprocess"',
            "nodes.count=3",
            'topology.kind="complete"',
            "experiment.rounds=2",
            'task.eval="both"',
            'task.model="linear"',
            'task.partition="dirichlet"',
            f"experiment.seed={SEED}",
        ],
    )
    summary, code = run_experiment(config, tmp_path / "run", Console(file=io.StringIO()))
    assert code == 0, summary.get("errors")
    records = [r for r in read_records(tmp_path / "run") if isinstance(r["node"], int)]
    assert records and all(r["local_accuracy"] is not None for r in records if r["test_accuracy"] is not None)
    last = {r["node"]: r["local_accuracy"] for r in records if r["round"] == 2}
    assert summary["final_mean_local_accuracy"] == pytest.approx(np.mean(list(last.values())))
    assert summary["final_min_local_accuracy"] == pytest.approx(min(last.values()))
    row = compare([tmp_path / "run"], tmp_path / "cmp").rows[0]
    assert row["final_mean_local_accuracy"]["mean"] == pytest.approx(summary["final_mean_local_accuracy"])


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (['task.eval="personal"'], "task.eval must be one of global, local, both"),
        (["task.shift_alpha=0"], "task.shift_alpha"),
        (["task.finetune_epochs=2"], "task.finetune_epochs = 2 fine-tunes before the local evaluation"),
        (  # 32 training examples among 20 nodes: some node holds 1, nothing to split
            ['task.eval="local"', 'task.dataset="synthetic"', "task.synthetic_samples=40", "nodes.count=20"],
            "task.eval = 'local': node 12 holds 1 training example(s)",
        ),
        (
            [
                'task.model="fedgmm"',
                'strategy.name="average"',
                'task.init="shared"',
                "task.gmm_components=2000",
                "nodes.count=3",
            ],
            "task.gmm_components = 2000 is more than node 1's 479 training examples",
        ),
        (
            ['task.model="fedgmm"', 'strategy.name="average"', 'task.init="own"'],
            "task.init must be \"shared\" (one initial mixture for every node); got 'own'",
        ),
    ],
)
def test_bad_values_exit_2_naming_the_key_before_any_node_starts(tmp_path, overrides, message):
    args = ["run", "--out", str(tmp_path / "run")]
    for item in overrides:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


@pytest.mark.timeout(30)
def test_fine_tuning_scores_a_tuned_copy_and_leaves_the_learner_as_it_was():
    task = TaskConfig(
        dataset="gmm-synthetic",
        model="fedgmm",
        gmm_components=1,
        gmm_learners=1,
        eval="both",
        finetune_epochs=3,
    )
    tuned, reference, untouched = (build_learner(task, 0, NODES, SEED) for _ in range(3))
    for learner in (tuned, reference, untouched):
        learner.train()
    accuracy = tuned.local_accuracy(0.0)
    reference.train(3)  # the same three epochs, kept
    data = reference.data
    assert accuracy == pytest.approx(np.mean(reference.predict(data.x_local) == data.y_local), abs=1e-12)
    for mine, theirs in zip(tuned.get_weights(), untouched.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    tuned.train()
    untouched.train()  # the minibatch order went on as if nothing had happened
    for mine, theirs in zip(tuned.get_weights(), untouched.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
