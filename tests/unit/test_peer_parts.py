"""The gossip peer's parts in-process (no network): a received model checked once, at the wire; the
own model's training and merge; the linked neighbours of a round; the bytes a round delivered;
the neighbours a rejoining peer waits for and catches up from."""

from __future__ import annotations

import dataclasses
import time
from concurrent import futures
from types import SimpleNamespace

import numpy as np
import pytest

from fedgossip.client.gossip.compression import PushCompression
from fedgossip.client.gossip.crash import Crash
from fedgossip.client.gossip.inbox import Inbox
from fedgossip.client.gossip.merge import merge_models
from fedgossip.client.gossip.neighbours import NeighbourWatch
from fedgossip.client.gossip.own_model import Diverged, OwnModel
from fedgossip.client.gossip.resampling import LinkedNeighbours
from fedgossip.client.gossip.sync_schedule import delivered
from fedgossip.client.gossip.transport import wire
from fedgossip.client.gossip.transport.wire import ModelAssembler, assemble, encode
from fedgossip.config import load_config
from fedgossip.scenario.churn import ChurnPlan, Outage, churn_plan
from fedgossip.scenario.roles import Events
from fedgossip.schema.codecs import NONE
from fedgossip.schema.tensors import specs_of
from fedgossip.strategies import Outcome, _validation, trusted_models
from fedgossip.strategies._validation import check_models, check_own, check_result
from fedgossip.tasks import TaskConfig, build_learner

NAMES = ["w", "b"]


def model(value: float) -> list[np.ndarray]:
    return [np.full((3, 2), value, np.float32), np.full(2, value, np.float32)]


def received(sender: int, value: float):
    """A model from `sender` as the peer gets it: through the wire's checks."""
    assembler = ModelAssembler(specs_of(NAMES, model(0)), senders=None, rounds=(1, 9), max_bytes=1 << 20)
    return assemble(iter(encode(sender, 1, 10, NAMES, model(value))), assembler)


# --- each check once ------------------------------------------------------------------------


def counting(monkeypatch, module, name: str, calls: list) -> None:
    """Record in `calls` each call of `module.name` (its name and string arguments)."""
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append((name, *(a for a in args if isinstance(a, str))))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_a_received_model_is_structure_checked_once_at_the_wire_and_only_the_result_after(monkeypatch):
    """From the wire to the merge: the wire checks the declared specs and the values' finiteness;
    the rule and its kernels trust the models; only the rule's result is checked."""
    calls: list = []
    counting(monkeypatch, wire, "check_header_specs", calls)
    counting(monkeypatch, wire, "check_values", calls)
    counting(monkeypatch, _validation, "check_same_structure", calls)
    messages = [received(1, 1.0), received(2, 3.0)]
    assert calls == [("check_header_specs",), ("check_values",)] * 2  # once per model, at the wire
    calls.clear()
    strategy = load_config(None, ["strategy.name=average"]).strategy
    outcome = merge_models(strategy, model(0.0), [m.arrays for m in messages], [10, 10], round_=1)
    assert outcome.error is None
    assert calls == [("check_same_structure", "the result", "the input")]
    np.testing.assert_allclose(outcome.model[0], 1.0)  # 0.5 * 0 + 0.5 * (1 + 3) / 2


def test_trusted_models_skip_the_structure_checks_only_inside_the_block():
    mismatched = [model(1.0), model(1.0)[:1]]
    with pytest.raises(ValueError, match="models\\[1\\] has 1 tensors"):
        check_models(mismatched)
    with pytest.raises(RuntimeError), trusted_models():
        assert [len(m) for m in check_models(mismatched)] == [2, 1]
        assert len(check_own(model(1.0)[:1], model(1.0))) == 1
        with pytest.raises(ValueError, match="contains NaN or Inf"):  # a rule's result still is
            check_result(model(np.nan), model(1.0))
        raise RuntimeError("the block ends with an error")
    with pytest.raises(ValueError, match="models\\[1\\] has 1 tensors"):
        check_models(mismatched)


def test_set_weights_checks_an_untrusted_model_assign_installs_a_trusted_one():
    learner = build_learner(TaskConfig(model="linear"), 0, 2, seed=0)
    weights = [w + 0.5 for w in learner.get_weights()]
    with pytest.raises(ValueError, match="finite"):
        learner.set_weights([np.full_like(weights[0], np.nan), *weights[1:]])
    learner.assign(weights)
    for got, sent in zip(learner.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(got, sent)


# --- the own model --------------------------------------------------------------------------


class FakeLearner:
    """A learner whose training gives the losses and weights it is told to."""

    num_examples = 10

    def __init__(self, results):
        self.results = iter(results)
        self.weights = model(0.0)

    def train(self):
        loss, self.weights = next(self.results)
        return loss

    def get_weights(self):
        return self.weights

    def assign(self, arrays):
        self.weights = arrays

    def evaluate(self, whole=False):
        self.evaluated_whole = [*getattr(self, "evaluated_whole", []), whole]
        return float(np.abs(self.weights[0]).sum()), 0.5


def fake_peer(learner, merge=None, limit=2, evaluate_every=1):
    plan = SimpleNamespace(learner=lambda round_, current: current, merge=merge)
    return SimpleNamespace(
        config=load_config(None, ["experiment.rounds=4", f"experiment.evaluate_every={evaluate_every}"]),
        learner=learner,
        plan=plan,
        service=SimpleNamespace(state="starting"),
        roles=SimpleNamespace(slowdown=1),
        gossip=SimpleNamespace(divergence_limit=limit),
        shared=[0, 1],
        compression=PushCompression(NONE, [], gamma=0.0),
    )


def test_a_non_finite_training_is_undone_and_repeated_ones_stop_the_peer():
    learner = FakeLearner(
        [(0.5, model(1.0)), (np.nan, model(2.0)), (0.4, model(np.inf)), (np.nan, model(3.0))]
    )
    own = OwnModel(fake_peer(learner))
    trained = own.train(1, model(0.0))
    assert trained.loss == 0.5 and trained.model[0][0, 0] == 1.0
    undone = own.train(2, trained.model)
    assert undone.loss is None and undone.model is trained.model and learner.weights is trained.model
    with pytest.raises(Diverged, match="diverged at round 3: training gave NaN or Inf in 2 rounds"):
        own.train(3, trained.model)


def test_a_merge_whose_loss_is_not_finite_is_discarded():
    learner = FakeLearner([])
    own = OwnModel(fake_peer(learner, merge=lambda *args: Outcome(model(np.inf), None)))
    merged = own.merge(1, model(0.0), model(1.0), [received(1, 1.0)])
    assert merged.discarded == "merged loss not finite" and merged.model[0][0, 0] == 1.0
    assert merged.test_loss == 6.0 and learner.weights is merged.model
    failed = OwnModel(fake_peer(learner, merge=lambda *args: Outcome(None, "boom"))).merge(
        2, model(0.0), model(1.0), []
    )
    assert failed.discarded == "merge failed"


def test_a_round_not_evaluated_keeps_the_merge_without_computing_its_loss():
    learner = FakeLearner([])
    learner.evaluate = None  # not called on a round experiment.evaluate_every skips
    own = OwnModel(fake_peer(learner, merge=lambda *args: Outcome(model(2.0), None), evaluate_every=2))
    merged = own.merge(1, model(0.0), model(1.0), [received(1, 1.0)])
    assert (merged.test_loss, merged.test_accuracy, merged.discarded) == (None, None, None)
    assert merged.model[0][0, 0] == 2.0 and learner.weights is merged.model
    del learner.evaluate  # round 2 is evaluated: the non-finite-loss guard runs again
    evaluated = own.merge(2, model(0.0), model(1.0), [received(1, 1.0)])
    assert evaluated.test_loss == 12.0 and evaluated.test_accuracy == 0.5


def test_only_the_last_round_evaluates_on_the_whole_test_set():
    learner = FakeLearner([])
    own = OwnModel(fake_peer(learner, merge=lambda *args: Outcome(model(2.0), None)))
    for round_ in range(1, 5):  # experiment.rounds = 4
        own.merge(round_, model(0.0), model(1.0), [received(1, 1.0)])
    assert learner.evaluated_whole == [False, False, False, True]


# --- linked neighbours and delivered bytes ---------------------------------------------------


def test_static_neighbours_are_linked_every_round_without_events():
    config = load_config(None, [])
    events = Events(0, 0.0)
    linked = LinkedNeighbours(config, 0, {1, 2}, events)
    assert linked.of(1) == linked.of(7) == {1, 2} and events.take() == []


def test_resampled_neighbours_change_per_epoch_and_each_epoch_is_announced_once():
    config = load_config(None, ["nodes.count=8", "scenario.resample_every=2", "scenario.resample_degree=2"])
    events = Events(0, 0.0)
    linked = LinkedNeighbours(config, 0, {1, 2}, events)
    first, second, third = linked.of(1), linked.of(2), linked.of(3)
    assert first == second and len(first) >= 2 and 0 not in first | third
    topology = [(e["round"], e["details"]["neighbours"]) for e in events.take()]
    assert topology == [(1, sorted(first)), (3, sorted(third))]
    assert LinkedNeighbours(config, 0, {1, 2}, Events(0, 0.0)).of(3) == third  # the same draw anywhere


def test_delivered_counts_the_sends_done_to_the_neighbours_heard():
    done = {n: futures.Future() for n in (1, 2, 3)}
    done[1].set_result(100)
    done[2].set_result(0)  # a notice
    assert delivered(done, [1, 2, 3, 4], until=0.0) == 100  # 3 still in flight, 4 got nothing
    assert delivered(done, [2], until=0.0) == 0


# --- rejoin after a crash --------------------------------------------------------------------


PLAN = ChurnPlan(
    (
        Outage(0, 3, 6),  # this peer
        Outage(1, 3, 6),  # down with it, back with it
        Outage(2, 2, 5),  # down before it, back before it
        Outage(3, 5, 8),  # down when it comes back
        Outage(4, 1, 3),  # back before it crashed
        Outage(5, 4, None),  # down past the end of the run
    ),
    rounds=10,
    down_rounds=3,
)


def test_a_round_neither_pushes_to_nor_waits_for_the_neighbours_the_plan_has_down():
    """Round 5: 0, 1, 3, 5 are down (2 is back): linked to 2, 4, waiting for them, though 2 was
    marked silent; round 6: 0 and 1 are back, 1 is waited for again although silent, 4 is not."""
    crash = Crash(SimpleNamespace(node=9), clock=None, plan=PLAN)
    everyone = set(range(6))
    assert crash.neighbours(5, everyone, silent={2, 4}) == ({2, 4}, {2})
    assert crash.neighbours(5, everyone, silent=set()) == ({2, 4}, {2, 4})
    assert crash.neighbours(6, everyone, silent={1, 4}) == ({0, 1, 2, 4}, {0, 1, 2})
    assert crash.neighbours(2, {0, 1, 2}, silent=set()) == ({0, 1}, {0, 1})  # 2 down from round 2
    bare = Crash(SimpleNamespace(node=9), clock=None, plan=ChurnPlan((), rounds=10, down_rounds=3))
    assert bare.neighbours(5, everyone, silent={2}) == (everyone, everyone - {2})  # no churn: as before


def test_a_rejoining_peer_adopts_the_lowest_neighbour_up_before_and_when_it_is_back():
    def source(node: int, neighbours: set[int], back: int) -> int | None:
        peer = SimpleNamespace(node=node, linked=SimpleNamespace(of=lambda round_: set(neighbours)))
        return Crash(peer, clock=None, plan=PLAN).source(back)

    assert source(0, {1, 2, 3, 4}, 6) == 2  # 1 down with it, 2 back at 5: up in rounds 5 and 6
    assert source(0, {1, 3, 4}, 6) == 4  # 3 is down in round 6
    assert source(0, {1, 3, 5}, 6) is None  # all down with it: its initial model
    everyone = load_config(None, ["nodes.count=6", "scenario.crash_fraction=1.0", "scenario.crash_round=3"])
    peer = SimpleNamespace(node=2, linked=SimpleNamespace(of=lambda round_: {0, 1, 3}))
    assert Crash(peer, clock=None, plan=churn_plan(everyone)).source(6) is None


def test_the_catch_up_of_a_rejoin_fetches_only_from_neighbours_heard_from():
    """Neighbours that never answered (down too) have no known progress: they are not fetched
    from, and their progress is not read (it was a KeyError)."""
    inbox = Inbox()
    inbox.note(3, 3, refused=False)
    config = load_config(None, [])
    peer = SimpleNamespace(
        links=SimpleNamespace(stubs={1: None, 3: None}), config=config, gossip=config.gossip, inbox=inbox
    )
    watch = NeighbourWatch(peer)
    fetched: list[int] = []

    def fetch(node: int):
        fetched.append(node)
        raise TimeoutError("down")

    watch.fetch = fetch
    assert watch.catch_up(1, margin=-1) is None
    assert fetched == [3]


def _rejoining_peer(
    healths: list[dict[int, int]], served: list[int], round_timeout: float = 0.2, outages: tuple = ()
):
    """A Crash of node 0 (neighbours 1, 2, 3; node 3 down in rounds 4 and 5 by the plan, and the
    `outages` given) whose
    Health calls answer `healths` in turn (the last one from then on) and whose GetModel calls
    serve models of the rounds `served` in turn; the crash, its Health calls and what it adopted
    and published."""
    config = load_config(None, [f"experiment.round_timeout={round_timeout}", "scenario.down_rounds=2"])
    calls: list[set[int]] = []
    log: dict[str, list] = {"assign": [], "publish": [], "skip_to": []}

    def health(nodes: set[int], timeout: float) -> dict[int, int]:
        calls.append(set(nodes))
        return {n: r for n, r in healths[min(len(calls), len(healths)) - 1].items() if n in nodes}

    def fetch(node: int):
        return dataclasses.replace(received(node, 1.0), round=served.pop(0))

    peer = SimpleNamespace(
        node=0,
        config=config,
        scenario=config.scenario,
        links=SimpleNamespace(stubs=dict.fromkeys((1, 2, 3))),
        linked=SimpleNamespace(of=lambda round_: {1, 2, 3}),
        watch=SimpleNamespace(health=health, fetch=fetch),
        learner=SimpleNamespace(assign=log["assign"].append, num_examples=7),
        inbox=SimpleNamespace(skip_to=log["skip_to"].append),
        service=SimpleNamespace(publish=lambda arrays, n, done: log["publish"].append(done)),
    )
    plan = ChurnPlan((Outage(0, 3, 5), Outage(3, 4, 6), *outages), rounds=10, down_rounds=2)
    return Crash(peer, clock=None, plan=plan), calls, log


def test_a_crashed_peer_serves_again_once_a_neighbour_up_is_one_round_from_pushing_to_it():
    """Back for round 5: it waits until 1 or 2 (3 is down in round 4) completed round 3."""
    crash, calls, _ = _rejoining_peer([{1: 2, 2: 2}, {1: 2, 2: 3}], served=[])
    crash._stay_down(5)
    assert calls == [{1, 2}, {1, 2}]
    crash, calls, _ = _rejoining_peer([{}], served=[], round_timeout=0.2)
    started = time.monotonic()
    crash._stay_down(5)  # nobody answers: at most its bound
    assert crash._down_bound() == pytest.approx(3 * 0.2 * 2)
    assert crash._down_bound() <= time.monotonic() - started < crash._down_bound() + 0.5


def test_a_rejoining_peer_adopts_its_sources_model_of_the_round_before_its_return():
    """Its source (1) completed round 3 only at the third Health: then it fetches, adopts and
    serves that model, its inbox open at round 5."""
    crash, calls, log = _rejoining_peer([{1: 2}, {1: 2}, {1: 4}], served=[4])
    message, off_plan = crash._adopt(1, 5, time.monotonic() + 0.6)
    assert (message.round, message.sender, off_plan) == (4, 1, None)
    assert calls == [{1}] * 3
    assert (len(log["assign"]), log["skip_to"], log["publish"]) == (1, [5], [4])


def test_a_rejoin_off_the_plan_is_bounded_and_says_why():
    crash, _, log = _rejoining_peer([{1: 6}], served=[6])  # the source went on without it
    message, off_plan = crash._adopt(1, 5, time.monotonic() + 0.6)
    assert message.round == 6 and off_plan == "node 1 was past round 4 (at 6)"
    assert log["skip_to"] == [7]
    crash, _, log = _rejoining_peer([{1: 3}], served=[], round_timeout=0.2)  # never gets there
    started = time.monotonic()
    assert crash._adopt(1, 5, time.monotonic() + 0.6) == (None, "no model of round 4 from node 1 within 0.6s")
    assert 0.6 <= time.monotonic() - started < 1.2
    assert log["assign"] == []


def test_a_rejoining_peer_pushes_once_its_neighbours_up_take_a_model_of_its_round():
    """Back for round 5: it waits until 1 and 2 (3 is down) completed round 3, so their inbox is
    open for round 5; a neighbour up before that does not answer is dead, one back with it (2)
    is waited for until it serves."""
    crash, calls, _ = _rejoining_peer([{1: 3, 2: 2}, {1: 3, 2: 3}], served=[])
    crash._await_neighbours(5, time.monotonic() + 5)
    assert calls == [{1, 2}, {2}]
    crash, calls, _ = _rejoining_peer([{1: 3}], served=[])
    crash._await_neighbours(5, time.monotonic() + 5)
    assert calls == [{1, 2}]  # 2 is dead
    crash, calls, _ = _rejoining_peer([{1: 3}, {1: 3, 2: 4}], served=[], outages=(Outage(2, 3, 5),))
    crash._await_neighbours(5, time.monotonic() + 5)
    assert calls == [{1, 2}, {2}]  # 2, back with it, serves at the second ask


def test_a_peer_down_again_at_its_return_or_past_the_end_goes_on_down_without_serving():
    """Node 0 crashes at round 3, is back for round 6 but down again from 6 and from 9 (crash_rate)
    past the end of a 10-round run: each crash returns at once with the initial model and the
    round it is planned back for (the next crash, or past the last round); the last one records
    round 10 (its initial model on the whole test set, the 8 rounds missed since round 3), so the
    launcher sees it finish."""
    config = load_config(None, ["experiment.rounds=10", "scenario.down_rounds=3"])
    emitted: list = []
    events = Events(0, 0.0)
    peer = SimpleNamespace(
        node=0,
        config=config,
        scenario=config.scenario,
        events=events,
        records=SimpleNamespace(
            emit_events=lambda emit: [emit(e["kind"]) for e in events.take()],
            round=lambda round_, current, messages, **fields: {"round": round_, **fields},
        ),
        plan=SimpleNamespace(fields=lambda round_: {}),
        service=SimpleNamespace(state="waiting"),
        server=SimpleNamespace(stop=lambda grace: emitted.append("stopped")),
        learner=SimpleNamespace(assign=lambda arrays: None, evaluate=lambda whole: (2.0, 0.1 + whole)),
        initial=model(0),
    )
    plan = ChurnPlan((Outage(0, 3, 6), Outage(0, 6, 9), Outage(0, 9, None)), rounds=10, down_rounds=3)
    crash = Crash(peer, clock=None, plan=plan)
    assert [crash.crash_and_rejoin(r, emitted.append)[1] for r in (3, 6, 9)] == [6, 9, 12]
    last = emitted.pop()
    assert emitted == ["crash", "stopped"] * 3
    assert (last["round"], last["train_loss"], last["test_accuracy"], last["bytes_sent"]) == (
        10,
        None,
        1.1,
        0,
    )
    assert peer.records.rejoined == {"rounds_missed": 8, "rejoin_s": 0.0}  # for that record
