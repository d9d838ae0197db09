"""Token bucket: steady load stays under the share; waits never exceed what the caller allows."""

from __future__ import annotations

import pytest

from aep_moengage.delivery.ratelimit import TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def bucket(rate: float, capacity: float | None = None) -> tuple[TokenBucket, FakeTime]:
    time = FakeTime()
    return TokenBucket(rate, capacity, clock=time.clock, sleep=time.sleep), time


def test_default_share_is_the_rate_split_across_max_concurrency_with_3_seconds_of_burst() -> None:
    limiter = TokenBucket.for_share(54_000, 2)
    assert limiter.rate == pytest.approx(450.0)
    assert limiter.capacity == pytest.approx(1_350.0)
    assert limiter.max_acquire == 1_350


def test_a_full_bucket_gives_without_waiting() -> None:
    limiter, time = bucket(10, capacity=30)
    assert limiter.acquire(30, max_wait_seconds=0)
    assert time.slept == []


def test_an_empty_bucket_waits_for_the_missing_tokens() -> None:
    limiter, time = bucket(10, capacity=30)
    limiter.acquire(30, max_wait_seconds=0)
    assert limiter.acquire(20, max_wait_seconds=5)
    assert time.slept == [pytest.approx(2.0)]


def test_a_wait_longer_than_allowed_takes_nothing() -> None:
    limiter, time = bucket(10, capacity=30)
    limiter.acquire(30, max_wait_seconds=0)
    assert not limiter.acquire(20, max_wait_seconds=1.9)
    assert time.slept == []
    time.now += 1.0
    assert limiter.available() == pytest.approx(10.0)


def test_steady_load_never_exceeds_the_rate_after_the_initial_burst() -> None:
    # Given a share of 100 users a second (capacity 300)
    limiter, time = bucket(100)
    # When 60 seconds' worth of 95-user requests go through
    sent = 0
    while time.now < 60:
        assert limiter.acquire(95, max_wait_seconds=60)
        sent += 95
    # Then no more than rate * time + the burst capacity went out
    assert sent <= 100 * time.now + 300 + 1e-6


def test_more_than_the_capacity_is_a_programming_error() -> None:
    limiter, _ = bucket(10, capacity=5)
    with pytest.raises(ValueError):
        limiter.acquire(6, max_wait_seconds=100)
