"""Scenarios on launched gossip runs (real peer processes, real gRPC): attacks against the merge
rules, a collective planting a trigger, a peer that crashes and rejoins.

Thresholds come from measured runs (digits, logistic regression, 10 rounds, random 4-regular
graph on 10 peers, 2 sign-flip attackers drawn by attacker_fraction = 0.2, seed 0):
honest min / mean accuracy: average 0.41 / 0.75, median 0.91 / 0.91, trimmed-mean (0.4) 0.91 / 0.91,
krum (f = 1) ... (and no attack: ...).
"""

from __future__ import annotations

import itertools
import json

import pytest

from fedgossip.reports import read_records

from .helpers import run_cli

ATTACK = [
    "nodes.count=10",
    "experiment.rounds=10",
    "task.model=linear",
    "topology.kind=regular",
    "topology.degree=4",
    "scenario.attack=sign-flip",
    "scenario.attacker_fraction=0.2",
]


def launch(tmp_path, settings: list[str], name: str = "run", timeout: float = 150):
    """Run the quickstart with `settings` to its end; its folder and summary."""
    out = tmp_path / name
    args = ["run", "--out", str(out)]
    for item in settings:
        args += ["--set", item]
    result = run_cli(*args, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "summary.json").read_text())


def events(out) -> list[dict]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("strategy", "robust"),
    [
        (["strategy.name=average"], False),
        (["strategy.name=median"], True),
        (["strategy.name=trimmed-mean", "strategy.params.trim_fraction=0.4"], True),
        (["strategy.name=krum", "strategy.params.f=1"], True),
    ],
    ids=["average", "median", "trimmed-mean", "krum"],
)
def test_two_sign_flip_attackers_break_averaging_not_the_robust_rules(tmp_path, strategy, robust):
    out, summary = launch(tmp_path, [*ATTACK, *strategy])
    attackers = summary["attackers"]
    assert len(attackers) == 2
    records = read_records(out)
    assert {r["node"] for r in records if r.get("attack") == "sign-flip"} == set(attackers)
    starts = [e for e in events(out) if e["kind"] == "attack"]
    assert sorted(e["node"] for e in starts) == attackers
    if robust:
        assert summary["honest_min_accuracy"] >= 0.85
    else:
        assert summary["honest_min_accuracy"] < 0.7
        assert summary["honest_mean_accuracy"] < 0.85


@pytest.mark.timeout(150)
def test_a_peer_that_crashes_rejoins_and_catches_up_without_stalling_the_others(tmp_path):
    timeout = 3.0
    out, summary = launch(
        tmp_path,
        [
            "nodes.count=4",
            "experiment.rounds=20",
            "task.model=linear",
            "task.local_epochs=10",  # rounds of ~0.1 s: the rejoin lands before the others end
            "topology.kind=complete",
            "strategy.name=average",
            f"experiment.round_timeout={timeout}",
            "scenario.crash=[2]",
            "scenario.crash_round=3",
            "scenario.down_rounds=4",
        ],
    )
    assert summary["status"] == "complete"
    kinds = [(e["node"], e["kind"]) for e in events(out)]
    assert kinds == [(2, "crash"), (2, "rejoin")]
    crash, rejoin = events(out)
    assert rejoin["time_s"] - crash["time_s"] >= timeout  # the others waited once, then went on
    assert rejoin["details"]["from_node"] in (0, 1, 3)
    records = read_records(out)
    mine = sorted((r for r in records if r["node"] == 2), key=lambda r: r["round"])
    assert [r["round"] for r in mine][-1] == 20
    back = next(r for r in mine if "rounds_missed" in r)
    assert back["rounds_missed"] == rejoin["details"]["rounds_missed"] >= 4  # away for down_rounds
    assert summary["rounds_missed_by_node"] == {"2": back["rounds_missed"]}
    final = {r["node"]: r["test_accuracy"] for r in records if r["round"] == 20}
    others = [final[n] for n in (0, 1, 3)]
    assert abs(final[2] - sum(others) / 3) < 0.03  # caught up: as good as its neighbours
    for node in (0, 1, 3):  # nobody waited for the crashed peer beyond one round timeout
        times = sorted((r["round"], r["time_s"]) for r in records if r["node"] == node)
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(times)]
        assert max(gaps) < timeout + 2.5, (node, gaps)
