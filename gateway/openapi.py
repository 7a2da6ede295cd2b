"""``GET /v1/openapi.json``: the API as an OpenAPI 3.1 document, built as data from the limits the edge enforces.

tests/integration/test_openapi.py fuzzes the running gateway against this document, so a limit that drifts
between a handler and this module fails the tests instead of misleading a client.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from gateway import openapi_psp
from gateway.http import MAX_BATCH_BODY, MAX_BODY
from idempotency import MAX_KEY_LENGTH
from shardpay.domain.money import CURRENCIES, MAX_AMOUNT, MIN_AMOUNT

Schema = dict[str, Any]

# The lengths gateway/routes/*.py pass to gateway.params, and gateway.params' own metadata and page limits.
ID_LENGTH = 64
REFERENCE_LENGTH = 255
DESCRIPTION_LENGTH = 1000
METADATA_KEYS, METADATA_KEY_LENGTH, METADATA_VALUE_LENGTH = 50, 40, 500
PAGE_LIMIT = 100
# PostgreSQL text cannot hold U+0000, so gateway.params refuses it in every string parameter.
NO_NUL = "^[^\\u0000]*$"
# A header value the HTTP layer keeps whole: printable ASCII without surrounding spaces, which parsers strip.
PRINTABLE_ASCII = "^[!-~]([ -~]*[!-~])?$"

# status -> (error type, the codes it carries, when it happens)
ERRORS: dict[int, tuple[str, tuple[str, ...], str]] = {
    400: ("invalid_request_error", ("parameter_invalid", "parameter_missing", "parameter_unknown",
          "idempotency_key_missing", "currency_mismatch", "invalid_json", "charge_not_refundable",
          "amount_too_large", "psp_rejected", "signature_invalid", "webhook_invalid"), "The request is malformed."),
    401: ("authentication_error", ("api_key_invalid",), "The bearer API key is missing or unknown."),
    402: ("payment_error", ("insufficient_funds",), "The source's available balance is too low; nothing moved."),
    404: ("invalid_request_error", ("resource_missing",), "No such object for this merchant."),
    408: ("invalid_request_error", ("request_timeout",),
          "The body did not arrive within SHARDPAY_BODY_TIMEOUT; nothing was done, and the connection is closed."),
    409: ("idempotency_error", ("idempotency_key_in_use",), "A request with this key is still running."),
    413: ("invalid_request_error", ("body_too_large",), f"The body is over {MAX_BODY} bytes."),
    422: ("idempotency_error", ("idempotency_key_reused",), "This key was used with different parameters."),
    429: ("rate_limit_error", ("rate_limited",), "The API key's rate limit is exhausted."),
    503: (
        "api_error",
        ("shard_unavailable", "shard_overloaded", "server_overloaded", "dependency_unavailable", "psp_unavailable"),
        "A dependency is down or at capacity; retry later with the same key.",
    ),
}  # fmt: skip

HEADERS: dict[str, tuple[Schema, str]] = {
    "X-Request-Id": ({"type": "string"}, "The caller's X-Request-Id if it sent a valid one, else a new id."),
    "RateLimit-Limit": ({"type": "integer", "minimum": 1}, "The API key's burst: requests allowed at once."),
    "RateLimit-Remaining": ({"type": "integer", "minimum": 0}, "Requests left in the bucket now."),
    "RateLimit-Reset": ({"type": "integer", "minimum": 0}, "Seconds until the bucket is full again."),
    "Retry-After": ({"type": "integer", "minimum": 1}, "Seconds to wait before retrying."),
    "Idempotent-Replayed": ({"type": "string", "const": "true"}, "This is the stored response to an earlier request "
                            "with the same Idempotency-Key and parameters."),
}  # fmt: skip
RATE = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
DESCRIPTION = (
    "A sharded, idempotent payment gateway. Besides what each operation lists, any request answers "
    f"413 body_too_large when it declares a body over {MAX_BODY} bytes ({MAX_BATCH_BODY} for a transfer batch), "
    "an unknown URL 404 resource_missing, "
    "and a method a path does not serve 405 method_not_allowed, all with the same error object."
)


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _headers(required: Iterable[str], optional: Iterable[str] = ()) -> Schema:
    needed = set(required)
    return {
        name: {"description": HEADERS[name][1], "required": name in needed, "schema": HEADERS[name][0]}
        for name in [*required, *optional]
    }


def _error_headers(status: int, write: bool) -> Schema:
    """Rate-limit headers come with every answer after the limiter ran: not a 401 (it runs after auth), nor a 408,
    413 or 503 that the edge gave before it (a slow or oversized body, a down control database or limiter)."""
    if status == 401:
        return _headers(["X-Request-Id"])
    if status in (408, 413, 503):
        return _headers(["X-Request-Id", *(["Retry-After"] if status == 503 else [])], RATE)
    required = ["X-Request-Id", *RATE, *(["Retry-After"] if status == 429 else [])]
    optional = ["Retry-After"] if status == 409 else ["Idempotent-Replayed"] if status == 402 and write else []
    return _headers(required, optional)


def _error_response(status: int, write: bool) -> Schema:
    return {"description": ERRORS[status][2], "headers": _error_headers(status, write),
            "content": _json(_ref("schemas", f"Error{status}"))}  # fmt: skip


def _success_response(description: str, schema: str, write: bool) -> Schema:
    optional = ["Idempotent-Replayed"] if write else []
    return {"description": description, "headers": _headers(["X-Request-Id", *RATE], optional),
            "content": _json(_ref("schemas", schema))}  # fmt: skip


@dataclass(frozen=True)
class Operation:
    """One authenticated /v1 operation; writes (those with a body) are idempotent and may answer
    400/408/409/413/422."""

    method: str
    path: str
    operation_id: str
    summary: str
    status: int
    schema: str
    errors: tuple[int, ...] = ()
    parameters: tuple[Schema, ...] = ()
    body: str | None = None

    def render(self) -> Schema:
        write = self.body is not None
        errors = {401, 429, 503, *self.errors, *((400, 408, 409, 413, 422) if write else ())}
        responses = {str(self.status): _success_response(self.summary, self.schema, write)}
        responses.update({str(status): _error_response(status, write) for status in sorted(errors)})
        parameters = [*self.parameters, _ref("parameters", "RequestId")]
        if write:
            parameters.append(_ref("parameters", "IdempotencyKey"))
        operation = {"operationId": self.operation_id, "summary": self.summary, "tags": [self.path.split("/")[2]],
                     "parameters": parameters, "responses": responses}  # fmt: skip
        if self.body is not None:
            operation["requestBody"] = {"required": True, "content": _json(_ref("schemas", self.body))}
        return operation


def _path_id(description: str) -> Schema:
    return {"name": "id", "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}  # fmt: skip


def _page_parameters() -> tuple[Schema, ...]:
    limit = {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT, "default": 10}
    after = {"type": "string", "pattern": "^ent_[0-9]{1,18}$"}
    return (
        {"name": "limit", "in": "query", "required": False, "schema": limit, "description": "Page size."},
        {"name": "starting_after", "in": "query", "required": False, "schema": after,
         "description": "An entry id: the page starts with the next older entry."},
    )  # fmt: skip


def operations() -> tuple[Operation, ...]:
    wallet_id, transfer_id = _path_id("A wallet id (wal_...)."), _path_id("A transfer id (tr_...).")
    return (
        Operation("post", "/v1/wallets", "createWallet", "Create a wallet", 201, "Wallet", body="CreateWallet"),
        Operation("get", "/v1/wallets/{id}", "getWallet", "A wallet and its balances", 200, "Wallet", (404,),
                  (wallet_id,)),
        Operation("get", "/v1/wallets/{id}/entries", "listWalletEntries", "The wallet's ledger entries, newest first",
                  200, "EntryList", (400, 404), (wallet_id, *_page_parameters())),
        Operation("post", "/v1/transfers", "createTransfer", "Move money between two wallets", 201, "Transfer",
                  (402, 404), body="CreateTransfer"),
        Operation("get", "/v1/transfers/{id}", "getTransfer", "A transfer", 200, "Transfer", (404,), (transfer_id,)),
        Operation("post", "/v1/transfer_batches", "createTransferBatch", "Up to 1,000 transfers, each on its own",
                  201, "TransferBatch", body="CreateTransferBatch"),
        Operation("get", "/v1/transfer_batches/{id}", "getTransferBatch", "A transfer batch, its items as they are now",
                  200, "TransferBatch", (404,), (_path_id("A transfer batch id (trb_...)."),)),
        Operation("get", "/v1/currencies", "listCurrencies", "The supported currencies", 200, "CurrencyList"),
        Operation("post", "/v1/payments", "createPayment", "Charge a payment method for 1-50 orders", 201, "Payment",
                  (404,), body="CreatePayment"),
        Operation("get", "/v1/payments/{id}", "getPayment", "A payment and its orders", 200, "Payment", (404,),
                  (_path_id("A payment id (pay_...)."),)),
        Operation("post", "/v1/checkout_sessions", "createCheckoutSession", "A hosted payment page at the PSP", 201,
                  "CheckoutSession", body="CreateCheckoutSession"),
        Operation("post", "/v1/payouts", "createPayout", "Pay a wallet's money out to a bank account", 201, "Payout",
                  (402, 404), body="CreatePayout"),
        Operation("get", "/v1/payouts/{id}", "getPayout", "A payout", 200, "Payout", (404,),
                  (_path_id("A payout id (out_...)."),)),
        Operation("post", "/v1/refunds", "createRefund", "Refund part or all of a payment order", 201, "Refund",
                  (402, 404), body="CreateRefund"),
        Operation("get", "/v1/refunds/{id}", "getRefund", "A refund", 200, "Refund", (404,),
                  (_path_id("A refund id (re_...)."),)),
    )  # fmt: skip


def _open(operation_id: str, summary: str, responses: Schema) -> Schema:
    """An operation outside the API key's reach: no auth, no rate limit."""
    return {"get": {"operationId": operation_id, "summary": summary, "tags": ["operations"], "security": [],
                    "parameters": [_ref("parameters", "RequestId")], "responses": responses}}  # fmt: skip


def _plain(description: str, media_type: str, schema: Schema, headers: Iterable[str] = ("X-Request-Id",)) -> Schema:
    return {"description": description, "headers": _headers(headers), "content": {media_type: {"schema": schema}}}


def operations_paths() -> Schema:
    ready = _ref("schemas", "Readiness")
    return {
        "/healthz": _open("healthz", "The process is alive",
                          {"200": _plain("Alive.", "application/json", _ref("schemas", "Health"))}),
        "/readyz": _open("readyz", "Every shard, the control database, Redis and RabbitMQ are reachable", {
            "200": _plain("Ready.", "application/json", ready),
            "503": _plain("Not ready.", "application/json", ready, ("X-Request-Id", "Retry-After")),
        }),
        "/metrics": _open("metrics", "Prometheus metrics",
                          {"200": _plain("Prometheus text format 0.0.4.", "text/plain", {"type": "string"})}),
        "/v1/openapi.json": _open("openapi", "This document",
                                  {"200": _plain("OpenAPI 3.1.", "application/json", {"type": "object"})}),
        "/v1/webhooks/psp": {"post": {
            "operationId": "pspWebhook", "summary": "The PSP's signed callback (PSP-Signature; no API key)",
            "tags": ["webhooks"], "security": [], "parameters": [_ref("parameters", "RequestId")],
            "requestBody": {"required": True, "content": _json(_ref("schemas", "PspEvent"))},
            "responses": {
                "200": _plain("Applied, already applied, or not about anything of shardpay's.", "application/json",
                              _ref("schemas", "WebhookReceipt")),
                "400": {"description": "A bad or stale signature: nothing changed.",
                        "headers": _headers(["X-Request-Id"]), "content": _json(_ref("schemas", "Error400"))},
                "503": {"description": "A shard is down: the PSP retries.",
                        "headers": _headers(["X-Request-Id", "Retry-After"]),
                        "content": _json(_ref("schemas", "Error503"))},
            },
        }},
    }  # fmt: skip


def paths() -> Schema:
    result: Schema = {}
    for operation in operations():
        result.setdefault(operation.path, {})[operation.method] = operation.render()
    return {**result, **operations_paths()}


def _object(properties: Schema, required: Iterable[str] | None = None) -> Schema:
    """A closed object: every property listed, unknown ones refused (requests) or never sent (responses)."""
    names = list(properties) if required is None else list(required)
    return {"type": "object", "properties": properties, "required": names, "additionalProperties": False}


def _text(max_length: int, nullable: bool = True, min_length: int = 0) -> Schema:
    kind = ["string", "null"] if nullable else "string"
    return {"type": kind, "minLength": min_length, "maxLength": max_length, "pattern": NO_NUL}


def request_schemas() -> Schema:
    amount = {"type": "integer", "minimum": MIN_AMOUNT, "maximum": MAX_AMOUNT, "description": "Minor units."}
    currency = _ref("schemas", "Currency")
    metadata = {
        "type": ["object", "null"],
        "maxProperties": METADATA_KEYS,
        "propertyNames": {"maxLength": METADATA_KEY_LENGTH, "pattern": NO_NUL},
        "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_LENGTH, "pattern": NO_NUL},
    }
    wallet_id = _text(ID_LENGTH, nullable=False, min_length=1)
    return {
        "CreateWallet": _object({"currency": currency, "reference": _text(REFERENCE_LENGTH), "metadata": metadata},
                                ["currency"]),
        "CreateTransfer": _object({"source": wallet_id, "destination": wallet_id, "amount": amount,
                                   "currency": currency, "description": _text(DESCRIPTION_LENGTH)},
                                  ["source", "destination", "amount", "currency"]),
        "CreateTransferBatch": _object({"transfers": {"type": "array", "minItems": 1, "maxItems": 1000, "items":
            _object({"source": wallet_id, "destination": wallet_id, "amount": amount, "currency": currency,
                     "reference": {"type": "string", "minLength": 1, "maxLength": REFERENCE_LENGTH,
                                   "pattern": PRINTABLE_ASCII},
                     "description": _text(DESCRIPTION_LENGTH)},
                    ["source", "destination", "amount", "currency", "reference"])}}),
    }  # fmt: skip


def response_schemas() -> Schema:
    integer, string, nullable = {"type": "integer"}, {"type": "string"}, {"type": ["string", "null"]}
    currency = _ref("schemas", "Currency")
    metadata = {"type": "object", "additionalProperties": string}

    def listing(item: Schema) -> Schema:
        return _object({"object": {"const": "list"}, "data": {"type": "array", "items": item},
                        "has_more": {"type": "boolean"}})  # fmt: skip

    return {
        "Wallet": _object({"id": string, "object": {"const": "wallet"}, "currency": currency,
                           "available": {"type": "integer", "minimum": 0}, "pending": integer,
                           "reference": nullable, "metadata": metadata, "created": integer}),
        "Transfer": _object({"id": string, "object": {"const": "transfer"}, "source": string, "destination": string,
                             "amount": {"type": "integer", "minimum": MIN_AMOUNT}, "currency": currency,
                             "description": nullable, "status": {"enum": ["processing", "succeeded", "failed"]},
                             "created": integer}),
        "Entry": _object({"id": {"type": "string", "pattern": "^ent_[0-9]+$"}, "object": {"const": "ledger_entry"},
                          "wallet": string, "amount": integer, "currency": currency,
                          "type": {"type": "string", "examples": ["transfer_in", "transfer_out", "adjustment"]},
                          "reference": string, "memo": nullable, "created": integer}),
        "EntryList": listing(_ref("schemas", "Entry")),
        "TransferBatch": _object({"id": string, "object": {"const": "transfer_batch"}, "created": integer,
                                  "results": {"type": "array", "items": {
                                      "type": "object", "required": ["reference", "status"],
                                      "properties": {"reference": string, "status": integer,
                                                     "transfer": {"type": "object"}, "error": {"type": "object"}}}}}),
        "CurrencyList": listing(_object({"code": currency, "minor_unit_digits": {"type": "integer", "minimum": 0}})),
        "Health": _object({"status": {"const": "ok"}}),
        "Readiness": _object({"status": {"enum": ["ready", "degraded", "unavailable", "draining"]},
                              "checks": {"type": "object", "additionalProperties": {"type": "boolean"}},
                              "details": {"type": "object"}}),
    }  # fmt: skip


def error_schemas() -> Schema:
    def error(status: int) -> Schema:
        error_type, codes, _ = ERRORS[status]
        body = _object({"type": {"const": error_type}, "code": {"enum": list(codes)}, "message": {"type": "string"},
                        "param": {"type": ["string", "null"]}, "request_id": {"type": "string"}})  # fmt: skip
        return _object({"error": body})

    return {f"Error{status}": error(status) for status in ERRORS}


def components() -> Schema:
    currency = {"type": "string", "enum": sorted(CURRENCIES), "description": "ISO 4217, uppercase."}
    request_id = {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Echoed back (and logged) if 1..128 printable ASCII characters; else replaced.",
    }
    key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
        "description": "Makes a retry safe: the first completed response is replayed for 24 h.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": PRINTABLE_ASCII},
    }
    return {
        "schemas": {"Currency": currency, **request_schemas(), **openapi_psp.request_schemas(), **response_schemas(),
                    **openapi_psp.response_schemas(), **error_schemas()},
        "parameters": {"RequestId": request_id, "IdempotencyKey": key},
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "The merchant's API key."}},
    }  # fmt: skip


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {"title": "shardpay", "version": "1", "description": DESCRIPTION},
        "security": [{"apiKey": []}],
        "paths": paths(),
        "components": components(),
    }


@functools.cache
def rendered() -> bytes:
    """The document as served: built once per process, since it only changes with the code."""
    return orjson.dumps(document())
