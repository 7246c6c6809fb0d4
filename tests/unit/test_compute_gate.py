"""The compute gate (`tasks.compute_gate`): at most one holder per token, across threads and forked
processes; a dead holder's token comes back; a stuck one delays the others by at most the wait
limit, while a queue that moves keeps waiting past it; without tokens, and nested, it does nothing."""

from __future__ import annotations

import os
import threading
import time

import pytest

from fedgossip.tasks import compute_gate


@pytest.fixture
def one_token(monkeypatch):
    """This process holds one token, as a fork server's child does."""
    monkeypatch.setattr(compute_gate, "_files", [])
    monkeypatch.setattr(compute_gate, "_slots", ())
    monkeypatch.setattr(compute_gate, "_semaphore", None)
    compute_gate.open_tokens(1)
    yield
    for file in compute_gate._files:
        file.close()


def free() -> bool:
    """Whether this thread could take a slot now (released again at once)."""
    fds = compute_gate._own()
    taken = compute_gate._take(fds)
    if taken is not None:
        compute_gate.fcntl.flock(taken, compute_gate.fcntl.LOCK_UN)
    return taken is not None


def in_thread(block, inside: threading.Event, leave: threading.Event) -> threading.Thread:
    """A thread that enters compute_gate.held(), sets `inside`, then waits for `leave`."""

    def run() -> None:
        with compute_gate.held():
            inside.set()
            block(leave)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert inside.wait(10)
    return thread


@pytest.mark.timeout(30)
def test_without_slots_the_gate_does_nothing(monkeypatch):
    monkeypatch.setattr(compute_gate, "_semaphore", None)
    with compute_gate.held(), compute_gate.held():
        pass


@pytest.mark.timeout(30)
def test_a_token_has_one_holder_at_a_time_across_threads(one_token):
    assert free()
    inside, leave = threading.Event(), threading.Event()
    thread = in_thread(lambda leave: leave.wait(10), inside, leave)
    assert not free()  # another thread's token is taken
    leave.set()
    thread.join(10)
    assert free()


@pytest.mark.timeout(30)
def test_a_waiter_enters_when_the_holder_leaves(one_token):
    inside, leave = threading.Event(), threading.Event()
    order = []
    thread = in_thread(lambda leave: (leave.wait(10), order.append("holder left")), inside, leave)
    threading.Timer(0.05, leave.set).start()
    with compute_gate.held():
        order.append("waiter in")
    thread.join(10)
    assert order == ["holder left", "waiter in"]


@pytest.mark.timeout(30)
def test_a_stuck_holder_delays_a_waiter_by_the_wait_limit_only(one_token, monkeypatch):
    monkeypatch.setattr(compute_gate, "WAIT_LIMIT_S", 0.2)
    inside, leave = threading.Event(), threading.Event()
    thread = in_thread(lambda leave: leave.wait(10), inside, leave)
    started = time.monotonic()
    with compute_gate.held():  # ungated after the limit
        waited = time.monotonic() - started
    leave.set()
    thread.join(10)
    assert 0.2 <= waited < 5


@pytest.mark.timeout(30)
def test_a_queue_longer_than_the_wait_limit_stays_gated_while_it_moves(one_token, monkeypatch):
    monkeypatch.setattr(compute_gate, "WAIT_LIMIT_S", 0.5)
    holders, most, lock = [0], [0], threading.Lock()

    def hold() -> None:  # 12 x 0.1 s in a queue: the last waits ~1.1 s, twice the limit
        with compute_gate.held():
            with lock:
                holders[0] += 1
                most[0] = max(most[0], holders[0])
            time.sleep(0.1)
            with lock:
                holders[0] -= 1

    started = time.monotonic()
    threads = [threading.Thread(target=hold, daemon=True) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert most[0] == 1  # one holder at a time: nobody gave up waiting and computed ungated
    assert time.monotonic() - started >= 1.2


@pytest.mark.timeout(30)
def test_a_waiter_gives_up_after_the_cap_even_while_the_gate_moves(one_token, monkeypatch):
    monkeypatch.setattr(compute_gate, "WAIT_LIMIT_S", 0.1)
    monkeypatch.setattr(compute_gate, "WAIT_CAP_S", 0.4)

    class Raced:
        """A semaphore whose units others always take first: each wait ends empty, with a release seen."""

        def acquire(self, timeout: float) -> bool:
            time.sleep(timeout)
            compute_gate._releases.value += 1
            return False

    monkeypatch.setattr(compute_gate, "_semaphore", Raced())
    started = time.monotonic()
    assert not compute_gate._acquire()
    assert 0.4 <= time.monotonic() - started < 5


@pytest.mark.timeout(30)
def test_nested_blocks_take_one_token(one_token, monkeypatch):
    monkeypatch.setattr(compute_gate, "WAIT_LIMIT_S", 10.0)
    started = time.monotonic()
    with compute_gate.held(), compute_gate.held():
        pass
    assert time.monotonic() - started < 5  # the inner block did not wait for the outer's token


@pytest.mark.timeout(30)
def test_a_forked_holder_excludes_the_parent_and_its_token_outlives_its_death(one_token, monkeypatch):
    monkeypatch.setattr(compute_gate, "WAIT_LIMIT_S", 0.2)
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child: take the token, then die holding it
        try:
            with compute_gate.held():
                os.write(ready_write, b"1")
                os.read(go_read, 1)
                os._exit(0)
        finally:
            os._exit(1)
    os.close(ready_write)
    os.close(go_read)
    try:
        assert os.read(ready_read, 1) == b"1"
        assert not free()
    finally:
        os.write(go_write, b"x")
        assert os.waitpid(pid, 0)[1] == 0
        os.close(ready_read)
        os.close(go_write)
    assert free()  # the kernel released its slot; its unit is lost until a waiter takes it over
    assert not compute_gate._semaphore.acquire(timeout=0)
    started = time.monotonic()
    with compute_gate.held():  # waits the limit, then adopts the dead holder's slot and unit
        assert time.monotonic() - started >= 0.2
    assert compute_gate._semaphore.acquire(timeout=0)  # given back
    compute_gate._semaphore.release()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", ["mlp", "linear"])
def test_a_learner_trains_and_a_torch_learner_evaluates_holding_a_token(model, monkeypatch):
    from fedgossip.tasks import TaskConfig, build_learner

    learner = build_learner(TaskConfig(model=model, local_steps=2), 0, 2, seed=0)
    calls = []
    real = compute_gate.held

    def held():
        calls.append("held")
        return real()

    monkeypatch.setattr(compute_gate, "held", held)
    learner.train()  # local_steps
    learner.train(epochs=1)
    learner.train_step()
    learner.evaluate()
    assert len(calls) == (4 if model == "mlp" else 3)  # a linear model's evaluation is not gated
