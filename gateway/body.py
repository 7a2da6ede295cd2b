"""A request body: read within a deadline and a size cap, then parsed as one bounded JSON object.

Everything here runs before the request touches Redis or a database (no idempotency lock, no rate token), so a
client that trickles its body or sends a hostile one costs a bounded read and a parse, nothing more:

- the read ends at ``MAX_BODY`` bytes (413) or ``timeout`` seconds (408, and the connection is closed);
- the JSON is one object (400), at most ``MAX_DEPTH`` containers deep: orjson reads up to 1,024 levels but writes
  only 254, and the idempotency fingerprint re-serialises the body, so a deep body was a 500;
- no object repeats a key (400): which of two values counts is a parser's choice, and a payment API must not
  leave it to one;
- no string holds a lone surrogate (``"\\ud800"``, 400): orjson reads it, but neither orjson nor PostgreSQL can
  write it back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from gateway.http import MAX_BODY, invalid_json, too_large
from shardpay.domain.errors import ApiError

MAX_DEPTH = 10  # the deepest body of the API (a batch of items with metadata) is 4


def slow_body(timeout: float) -> ApiError:
    message = f"The request body did not arrive within {timeout:g} s."
    return ApiError(408, "invalid_request_error", "request_timeout", message, None, {"Connection": "close"})


async def read(receive: Receive, within: float, limit: int = MAX_BODY) -> bytes:
    """The whole body, at most ``limit`` bytes (whatever is declared), within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            return await _read(receive, limit)
    except TimeoutError:
        raise slow_body(within) from None


async def _read(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


def parse(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object within the limits above; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    try:
        params = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_json(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(params, dict):
        raise invalid_json("The request body must be a JSON object.")
    keys = _shape(params)
    # Every key is followed by exactly one colon, so as many colons as keys means no key was repeated (and no
    # string holds a colon). Otherwise, and only then, look closer: that costs a second parse.
    if raw.count(b":") != keys:
        _no_repeated_keys(raw)
    if b"\\u" in raw:
        _no_lone_surrogates(params)
    return params


def _shape(params: dict[str, Any]) -> int:
    """The number of keys in the whole document; 400 past ``MAX_DEPTH`` levels."""
    keys, depth, level = 0, 1, [params]
    while True:
        below: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                keys += len(node)
                below.extend(child for child in node.values() if isinstance(child, dict | list))
            else:
                below.extend(child for child in node if isinstance(child, dict | list))
        if not below:
            return keys
        depth += 1
        if depth > MAX_DEPTH:
            raise invalid_json(f"The request body is nested more than {MAX_DEPTH} levels deep.")
        level = below


def _reject_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for name, value in pairs:
        if name in seen:
            raise invalid_json(f"The request body repeats the key {name[:40]!r} in one object.")
        seen[name] = value
    return seen


def _no_repeated_keys(raw: bytes) -> None:
    try:
        json.loads(raw, object_pairs_hook=_reject_repeats)
    except ValueError as exc:  # orjson read it, so this is not expected; if it happens, still the client's body
        raise invalid_json(f"The request body is not valid JSON: {exc}.") from None


def _no_lone_surrogates(node: Any) -> None:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                raise invalid_json("The request body holds a lone UTF-16 surrogate (\\ud800-\\udfff).") from None
