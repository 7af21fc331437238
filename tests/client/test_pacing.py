"""client.pacing: the token bucket that keeps the realtime client below the server's limits."""

from __future__ import annotations

from client.pacing import Rate, TokenBucket


def sent_within(bucket: TokenBucket, seconds: float, step: float = 0.001) -> int:
    """How many a sender that always has something to send gets through in `seconds`."""
    now, sent = 0.0, 0
    while now < seconds:
        if bucket.delay(now) == 0:
            bucket.take(now)
            sent += 1
        else:
            now += step
    return sent


def test_a_full_bucket_lets_its_burst_through_at_once_then_its_rate() -> None:
    bucket = TokenBucket(Rate(per_s=10.0, burst=5.0))
    assert sent_within(bucket, 0.0001) == 5
    assert bucket.delay(0.0) > 0.09  # the next token in a tenth of a second
    assert 14 <= sent_within(TokenBucket(Rate(per_s=10.0, burst=5.0)), 1.0) <= 15


def test_no_interval_gets_more_than_burst_plus_rate_times_its_length() -> None:
    rate = Rate(per_s=15.0, burst=250.0)
    assert sent_within(TokenBucket(rate), 60.0, step=0.01) <= rate.most_in(60.0) + 1


def test_an_idle_bucket_refills_only_up_to_its_burst() -> None:
    bucket = TokenBucket(Rate(per_s=100.0, burst=3.0))
    bucket.take(0.0)
    assert bucket.delay(3600.0) == 0
    for _ in range(3):
        bucket.take(3600.0)
    assert bucket.delay(3600.0) > 0
