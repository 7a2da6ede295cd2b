"""The rate limiter's reply (from the GCRA script) turned into a decision and its RateLimit headers."""

from __future__ import annotations

from ratelimit import Decision


def test_an_allowed_request_reports_what_is_left() -> None:
    decision = Decision.from_reply([1, 41, 0, 2500], burst=50)
    assert decision.allowed
    assert decision.headers() == {"RateLimit-Limit": "50", "RateLimit-Remaining": "41", "RateLimit-Reset": "3"}


def test_a_refused_request_says_when_to_retry_in_whole_seconds() -> None:
    decision = Decision.from_reply([0, 0, 1200, 4000], burst=10)
    assert not decision.allowed
    headers = decision.headers()
    assert headers["Retry-After"] == "2"  # 1.2 s rounds up: retrying at 1 s would be refused again
    assert headers["RateLimit-Remaining"] == "0"


def test_retry_after_is_at_least_one_second() -> None:
    assert Decision.from_reply([0, 0, 3, 3], burst=10).headers()["Retry-After"] == "1"


def test_redis_replies_as_bytes_or_strings_parse_alike() -> None:
    assert Decision.from_reply([b"1", b"5", b"0", b"100"], 9) == Decision.from_reply([1, 5, 0, 100], 9)


def test_a_negative_remaining_is_shown_as_zero() -> None:
    assert Decision.from_reply([1, -3, 0, 10], burst=5).remaining == 0


def test_fail_open_is_unlimited_up_to_the_burst() -> None:
    decision = Decision.unlimited(burst=20)
    assert decision.allowed and decision.remaining == 20 and "Retry-After" not in decision.headers()
