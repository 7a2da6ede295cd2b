"""The webhook signature: HMAC-SHA256 over "<t>.<raw body>", with a freshness window."""

from __future__ import annotations

import re

from events.signing import sign, verify

SECRET = "whsec_test"
BODY = b'{"id":"evt_1","object":"event"}'
T = 1_700_000_000


def test_signature_has_the_documented_shape() -> None:
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", sign(SECRET, BODY, T))


def test_good_signature_verifies() -> None:
    assert verify(SECRET, sign(SECRET, BODY, T), BODY, now=T + 5)


def test_tampered_body_is_refused() -> None:
    assert not verify(SECRET, sign(SECRET, BODY, T), BODY.replace(b"evt_1", b"evt_2"), now=T)


def test_wrong_secret_is_refused() -> None:
    assert not verify("whsec_other", sign(SECRET, BODY, T), BODY, now=T)


def test_stale_signature_is_refused_after_300_seconds() -> None:
    header = sign(SECRET, BODY, T)
    assert verify(SECRET, header, BODY, now=T + 300)
    assert not verify(SECRET, header, BODY, now=T + 301)


def test_signature_from_the_far_future_is_refused() -> None:
    assert not verify(SECRET, sign(SECRET, BODY, T + 301), BODY, now=T)


def test_tolerance_can_be_narrowed() -> None:
    assert not verify(SECRET, sign(SECRET, BODY, T), BODY, now=T + 11, tolerance=10)


def test_timestamp_is_covered_by_the_mac() -> None:
    header = sign(SECRET, BODY, T).replace(f"t={T}", f"t={T + 100}")
    assert not verify(SECRET, header, BODY, now=T + 100)


def test_malformed_headers_are_refused() -> None:
    good = sign(SECRET, BODY, T)
    mac = good.split("v1=")[1]
    for header in ("", "garbage", f"v1={mac}", f"t={T}", f"t=abc,v1={mac}", f"t={T},v1=", f"t=-{T},v1={mac}"):
        assert not verify(SECRET, header, BODY, now=T), header


def test_any_of_several_v1_values_may_match_during_secret_rotation() -> None:
    rotated = sign("whsec_old", BODY, T) + ",v1=" + sign(SECRET, BODY, T).split("v1=")[1]
    assert verify(SECRET, rotated, BODY, now=T)
    assert verify("whsec_old", rotated, BODY, now=T)
