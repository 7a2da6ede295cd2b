"""``Shardpay-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, for our webhooks and the PSP's.

The timestamp is inside the MAC, so a captured request cannot be replayed after ``tolerance`` seconds.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Shardpay-Signature"
DEFAULT_TOLERANCE = 300


def sign(secret: str, body: bytes, t: int) -> str:
    """The header value for ``body`` sent at unix time ``t``."""
    return f"t={t},v1={_mac(secret, body, t)}"


def verify(secret: str, header: str, body: bytes, now: float, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True if some ``v1`` in ``header`` is the MAC of ``body`` and ``t`` is within ``tolerance`` of ``now``."""
    parsed = _parse(header)
    if parsed is None:
        return False
    t, candidates = parsed
    if abs(now - t) > tolerance:
        return False
    expected = _mac(secret, body, t)
    # Compare every candidate (several are sent while a secret is rotated), each in constant time.
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


def _mac(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def _parse(header: str) -> tuple[int, list[str]] | None:
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    return None if t is None or not candidates else (t, candidates)
