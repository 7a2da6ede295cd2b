"""The body parser's limits, on bytes alone: depth, repeated keys, lone surrogates, shape."""

from __future__ import annotations

import pytest

from gateway import body
from shardpay.domain.errors import ApiError


def _refused(raw: bytes) -> ApiError:
    with pytest.raises(ApiError) as caught:
        body.parse(raw)
    assert caught.value.status == 400 and caught.value.code == "invalid_json", caught.value
    return caught.value


def test_ordinary_bodies_parse() -> None:
    assert body.parse(b"") == {}
    assert body.parse(b'{"amount": 10, "currency": "USD"}') == {"amount": 10, "currency": "USD"}
    # Colons inside strings are not keys: the closer look finds nothing repeated.
    assert body.parse(b'{"description": "a:b:c", "url": "https://x"}') == {"description": "a:b:c", "url": "https://x"}
    assert body.parse(b'{"a" : {"b" : [1, {"c": "d"}]}}') == {"a": {"b": [1, {"c": "d"}]}}


def test_depth_is_bounded_before_anything_serialises_it() -> None:
    at_limit = b'{"a":' * (body.MAX_DEPTH - 1) + b"{}" + b"}" * (body.MAX_DEPTH - 1)
    assert body.parse(at_limit)
    assert "nested" in _refused(b'{"a":' * body.MAX_DEPTH + b"{}" + b"}" * body.MAX_DEPTH).message
    # What orjson reads but cannot write back (the old 500): 300 levels of lists inside an object.
    assert "nested" in _refused(b'{"a":' + b"[" * 300 + b"]" * 300 + b"}").message
    _refused(b"[" * 2000 + b"]" * 2000)  # past orjson's own limit: a parse error, still a 400


def test_repeated_keys_are_refused_at_any_depth() -> None:
    assert "amount" in _refused(b'{"amount": 1, "amount": 1000000}').message
    assert "k" in _refused(b'{"metadata": {"k": "1", "k": "2"}}').message
    _refused(b'{"orders": [{"a": 1}, {"b": 2, "b": 3}]}')


def test_lone_surrogates_are_refused_but_real_escapes_pass() -> None:
    assert "surrogate" in _refused(b'{"description": "\\ud800"}').message
    _refused(b'{"\\udfff": "x"}')
    assert body.parse(b'{"description": "\\u00e9\\ud83d\\ude00"}') == {"description": "\u00e9\U0001f600"}


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"x"', b"null", b"\xff\xfe", b'{"a": 1', b"{'a': 1}", b'{"a": NaN}'])
def test_anything_but_one_json_object_is_refused(raw: bytes) -> None:
    _refused(raw)
