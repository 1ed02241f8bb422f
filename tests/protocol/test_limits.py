"""Frame size and per-connection rate limits, with time passed in."""

from __future__ import annotations

import pytest

from omnia.protocol.limits import Shares, TokenBucket, exceeds


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        pytest.param("", 0, False, id="empty-fits-zero"),
        pytest.param("abc", 3, False, id="ascii-at-limit"),
        pytest.param("abcd", 3, True, id="ascii-over-limit"),
        pytest.param("€", 3, False, id="three-byte-char-at-limit"),
        pytest.param("€€", 5, True, id="multibyte-over-limit-though-short"),
        pytest.param("a" * 10, 100, False, id="short-and-far-below"),
    ],
)
def test_exceeds_counts_utf8_bytes(text: str, limit: int, expected: bool) -> None:
    assert exceeds(text, limit) is expected


def test_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=1.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.1)
    assert bucket.take(0.5)  # 0.5 s at 2/s is one token
    assert not bucket.take(0.5)


def test_bucket_never_holds_more_than_its_burst() -> None:
    """An hour of silence must not buy an hour's worth of flooding."""
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    allowed = sum(bucket.take(3600.0) for _ in range(10))
    assert allowed == 2


def test_bucket_tells_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=4.0, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert bucket.retry_after(0.0) == pytest.approx(0.25)
    assert bucket.retry_after(0.25) == pytest.approx(0.0)


def test_bucket_time_going_backwards_grants_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)


def test_rate_zero_disables_the_limit() -> None:
    bucket = TokenBucket(rate=0, burst=1, now=0.0)
    assert all(bucket.take(0.0) for _ in range(1000))


def test_shares_bound_each_client_apart_and_come_back() -> None:
    shares = Shares(2)
    assert [shares.take("a"), shares.take("a"), shares.take("a")] == [True, True, False]
    assert shares.take("b")
    shares.give_back("a")
    assert shares.take("a") and not shares.take("a")
    for _ in range(2):
        shares.give_back("a")
    shares.give_back("b")
    assert (shares.held("a"), shares.held("b"), shares._held) == (0, 0, {})


def test_shares_of_zero_count_nothing() -> None:
    shares = Shares(0)
    assert all(shares.take("a") for _ in range(1000))
    shares.give_back("a")
    assert shares._held == {}
