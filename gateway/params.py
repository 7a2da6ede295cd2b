"""Turning a JSON object into a command's fields, with errors that name the parameter and the bad value."""

from __future__ import annotations

from typing import Any

from shardpay.domain.errors import ApiError


def only(params: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ApiError.invalid(unknown[0], f"Received unknown parameter: '{unknown[0]}'.", code="parameter_unknown")


def string(
    params: dict[str, Any], name: str, max_length: int, required: bool = False, label: str | None = None
) -> str | None:
    """``params[name]`` as a string of at most ``max_length``; errors name it ``label`` (a nested field's full
    name, ``orders[0][destination]``) or ``name``."""
    value = params.get(name)
    label = label or name
    if value is None:
        if required:
            raise ApiError.missing(label)
        return None
    if not isinstance(value, str):
        raise ApiError.invalid(label, f"'{label}' must be a string, got {value!r:.100}.")
    if required and not value:
        raise ApiError.missing(label)
    if len(value) > max_length:
        raise ApiError.invalid(label, f"'{label}' must be at most {max_length} characters, got {len(value)}.")
    if "\x00" in value:  # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database
        raise ApiError.invalid(label, f"'{label}' must not contain NUL (U+0000) characters.")
    return value


def required_string(params: dict[str, Any], name: str, max_length: int, label: str | None = None) -> str:
    value = string(params, name, max_length, required=True, label=label)
    assert value is not None
    return value


def metadata(params: dict[str, Any], name: str = "metadata") -> dict[str, str] | None:
    """Like Stripe: up to 50 keys of at most 40 characters, string values of at most 500."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 50:
        raise ApiError.invalid(name, f"'{name}' must be an object of at most 50 string values.")
    for key, item in value.items():
        if len(key) > 40 or not isinstance(item, str) or len(item) > 500 or "\x00" in key + item:
            raise ApiError.invalid(name, f"'{name}[{key[:40]}]' must be a string of at most 500 characters, no NUL.")
    return value


def limit(raw: str | None, default: int = 10, maximum: int = 100) -> int:
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= maximum:
        raise ApiError.invalid("limit", f"'limit' must be an integer between 1 and {maximum}, got {raw!r}.")
    return int(raw)
