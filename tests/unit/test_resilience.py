"""The circuit breaker and the backoff, on a fake clock."""

from __future__ import annotations

from shardpay.resilience import Breaker, State, full_jitter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_full_jitter_grows_exponentially_up_to_the_cap() -> None:
    assert [full_jitter(n, 0.5, 8.0, rng=lambda: 1.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert full_jitter(3, 0.5, 8.0, rng=lambda: 0.0) == 0.0
    assert full_jitter(0, 0.5, 8.0, rng=lambda: 1.0) == 0.5


def test_a_few_failures_among_many_successes_never_open_it() -> None:
    breaker = Breaker("charge", clock=Clock())
    for i in range(1000):
        assert breaker.allow()
        breaker.record(i % 3 != 0)  # a third fail: far below the ratio
    assert breaker.state is State.CLOSED


def test_an_outage_opens_it_a_probe_closes_it() -> None:
    clock = Clock()
    breaker = Breaker("charge", window=20, minimum=10, ratio=0.8, cooldown=5.0, clock=clock)
    for _ in range(9):
        breaker.record(False)
    assert breaker.state is State.CLOSED  # not enough calls seen yet
    breaker.record(False)
    assert breaker.state is State.OPEN and breaker.capacity(10) == 0 and breaker.retry_in() == 5.0
    clock.now = 5.0
    assert breaker.state is State.HALF_OPEN
    assert breaker.capacity(10) == 1  # one probe
    assert breaker.capacity(10) == 0  # and only one at a time
    breaker.record(False)  # the probe failed: open again, for a new cooldown
    assert breaker.state is State.OPEN
    clock.now = 10.0
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state is State.CLOSED and breaker.capacity(7) == 7


def test_a_probe_that_did_not_happen_frees_the_slot() -> None:
    clock = Clock()
    breaker = Breaker("payout", minimum=1, ratio=1.0, cooldown=1.0, clock=clock)
    breaker.record(False)
    clock.now = 1.0
    assert breaker.capacity(5) == 1
    breaker.release()
    assert breaker.capacity(5) == 1
