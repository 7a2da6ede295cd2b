"""Hostile input, to every route the gateway serves: deep, huge, wrong types, wrong content type, invalid UTF-8,
repeated JSON keys, lone surrogates, NUL, bad headers and paths. Nothing answers 5xx, every refusal is the API's
JSON error, nothing moves money, and the audit stays clean.

The routes come from the OpenAPI document, so a route added later is fuzzed here without a change to this file.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson

from gateway import openapi
from gateway.http import MAX_BODY
from shardpay.config import Settings
from shards.pools import Shards
from tests.conftest import StackMerchant, audit_clean, key, new_wallet

DEEP = b'{"a":' + b"[" * 300 + b"]" * 300 + b"}"
WRONG_VALUES: list[Any] = [None, True, 1.5, -1, 0, 10**30, "", "x" * 5000, [], {}, [1, 2], {"a": {"b": "c"}}, "\x00"]


def _bodies(fields: list[str]) -> Iterator[tuple[str, bytes]]:
    """(what, raw body) for one write: structural attacks, then every field set to every wrong value."""
    yield "deep", DEEP
    yield "deeper than orjson reads", b"[" * 5000 + b"]" * 5000
    yield "huge", b'{"description": "' + b"x" * (MAX_BODY + 10) + b'"}'
    yield "invalid utf-8", b'{"currency": "\xff\xfe"}'
    yield "truncated", b'{"currency": "US'
    yield "an array", b"[1, 2, 3]"
    yield "a string", b'"USD"'
    yield "a lone surrogate", b'{"currency": "\\ud800", "description": "\\udfff"}'
    yield "NUL", b'{"currency": "US\\u0000D", "description": "\\u0000"}'
    yield "repeated keys", b'{"amount": 1, "amount": 1000, "currency": "USD", "currency": "EUR"}'
    yield "not JSON", b"currency=USD&amount=10"
    yield "metadata too big", orjson.dumps({"currency": "USD", "metadata": {f"k{i}": "v" for i in range(51)}})
    yield "metadata key too long", orjson.dumps({"currency": "USD", "metadata": {"k" * 41: "v"}})
    yield "metadata value too long", orjson.dumps({"currency": "USD", "metadata": {"k": "v" * 501}})
    yield "metadata nested", orjson.dumps({"currency": "USD", "metadata": {"k": {"nested": "v"}}})
    for name, value in itertools.product(fields, WRONG_VALUES):
        yield f"{name}={value!r:.40}", json.dumps({name: value}).encode()


def _writes() -> list[tuple[str, list[str]]]:
    document = openapi.document()
    schemas = document["components"]["schemas"]
    writes = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "post" and "requestBody" in operation:
                ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                writes.append((path, list(schemas[ref.rsplit("/", 1)[1]].get("properties", {}))))
    assert writes, "the document lists no writes"
    return writes


def _reads() -> list[str]:
    return [path for path, item in openapi.document()["paths"].items() if "get" in item]


def _check(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code == 400 and response.text == "Invalid HTTP request received.":
        return  # uvicorn's HTTP parser refused the request line or a header before any of ours saw it
    assert "x-request-id" in response.headers, what
    if response.status_code >= 400 and response.request.url.path.startswith("/v1"):
        error = response.json()["error"]
        assert {"type", "code", "message", "param", "request_id"} <= set(error), (what, error)


async def test_hostile_bodies_to_every_write(gateway: str, merchant: StackMerchant, shards: Shards,
                                             settings: Settings) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as http:
        await new_wallet(http, shards, funds=1000)  # something to steal, if anything could
        for path, fields in _writes():
            for what, raw in _bodies(fields):
                for content_type in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
                    response = await http.post(path, content=raw, headers={
                        "Idempotency-Key": key(), "Content-Type": content_type})  # fmt: skip
                    _check(response, f"POST {path} {what} as {content_type}")
                    assert response.status_code in (400, 404, 413), f"POST {path} {what}: {response.text[:300]}"
    await audit_clean(settings)


async def test_hostile_headers_to_every_write(gateway: str, merchant: StackMerchant) -> None:
    auth = f"Bearer {merchant.api_key}".encode()
    variants: list[tuple[str, list[tuple[bytes, bytes]]]] = [
        ("no auth", [(b"idempotency-key", b"k")]),
        ("auth not bearer", [(b"authorization", b"Basic " + merchant.api_key.encode())]),
        ("auth latin-1", [(b"authorization", b"Bearer \xe9\xe9\xe9")]),
        ("auth huge", [(b"authorization", b"Bearer " + b"a" * 6000)]),
        ("key latin-1", [(b"authorization", auth), (b"idempotency-key", b"k\xe9y")]),
        ("key too long", [(b"authorization", auth), (b"idempotency-key", b"k" * 256)]),
        ("key control chars", [(b"authorization", auth), (b"idempotency-key", b"k\x01\x02")]),
        ("request id huge", [(b"authorization", auth), (b"idempotency-key", key().encode()),
                             (b"x-request-id", b"r" * 5000)]),
        ("two keys", [(b"authorization", auth), (b"idempotency-key", key().encode()),
                      (b"idempotency-key", key().encode())]),
    ]  # fmt: skip
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        for path, _ in _writes():
            for what, raw_headers in variants:
                request = http.build_request("POST", path, content=b'{"currency": "USD"}')
                request.headers = httpx.Headers([h for h in request.headers.raw if h[0] != b"content-length"]
                                                + [(b"content-length", b"19"), *raw_headers])  # fmt: skip
                try:
                    response = await http.send(request)
                except httpx.RemoteProtocolError:
                    continue  # the HTTP parser refused it outright (a 400 and a closed connection): not a 5xx
                _check(response, f"POST {path} {what}")


async def test_hostile_paths_and_queries_to_every_read(gateway: str, merchant: StackMerchant) -> None:
    ids = ["x", "wal_" + "0" * 24, "wal_ffff" + "0" * 20, "../../etc/passwd", "%00", "%ff%fe", "a" * 3000,
           "wal_%E2%80%AE", "tr_0000" + "g" * 20, "%2e%2e%2f"]  # fmt: skip
    queries = ["", "?limit=0", "?limit=-1", "?limit=101", "?limit=1e3", "?limit=%ff", "?limit=1&limit=2",
               "?starting_after=ent_", "?starting_after=ent_99999999999999999999", "?starting_after=%00",
               "?starting_after=" + "a" * 3000, "?%ff=%fe"]  # fmt: skip
    headers = {"Authorization": f"Bearer {merchant.api_key}"}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=30) as http:
        requests = [
            f"{path.replace('{id}', object_id)}{query}"
            for path in _reads() for object_id in (ids if "{id}" in path else [""]) for query in queries
        ]  # fmt: skip
        for start in range(0, len(requests), 50):
            chunk = requests[start : start + 50]
            responses = await asyncio.gather(*(http.get(url) for url in chunk))
            for url, response in zip(chunk, responses, strict=True):
                _check(response, f"GET {url}")
