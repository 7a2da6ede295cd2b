"""The part of ``GET /v1/openapi.json`` about money in and out through the PSP: payments, checkout sessions,
payouts, refunds and the PSP's webhook, built from the same limits the routes enforce."""

from __future__ import annotations

from typing import Any

from shardpay.domain.money import MAX_AMOUNT, MIN_AMOUNT
from shardpay.services.checkout import RETURN_URL_LENGTH
from shardpay.services.payments import MAX_ORDERS

Schema = dict[str, Any]
NO_NUL = "^[^\\u0000]*$"
PAYMENT_METHOD = "^pm_[A-Za-z0-9_]{1,100}$"
BANK_ACCOUNT = "^ba_[A-Za-z0-9_]{1,100}$"


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: Schema, required: list[str] | None = None) -> Schema:
    names = list(properties) if required is None else required
    return {"type": "object", "properties": properties, "required": names, "additionalProperties": False}


def _text(max_length: int, nullable: bool = False, pattern: str = NO_NUL) -> Schema:
    return {"type": ["string", "null"] if nullable else "string", "minLength": 1, "maxLength": max_length,
            "pattern": pattern}  # fmt: skip


def request_schemas() -> Schema:
    amount = {"type": "integer", "minimum": MIN_AMOUNT, "maximum": MAX_AMOUNT, "description": "Minor units."}
    currency = _ref("Currency")
    order = _object({"destination": _text(64), "amount": amount, "currency": currency,
                     "reference": _text(255, nullable=True)}, ["destination", "amount", "currency"])  # fmt: skip
    return {
        "CreatePayment": _object({
            "payment_method": {**_text(128, pattern=PAYMENT_METHOD),
                               "description": "A token from the PSP's hosted page: card data never reaches shardpay."},
            "orders": {"type": "array", "minItems": 1, "maxItems": MAX_ORDERS, "items": order},
        }),
        "CreateCheckoutSession": _object({"amount": amount, "currency": currency, "return_url": {
            **_text(RETURN_URL_LENGTH, pattern="^https?://[!-~]+$"), "format": "uri"}}),
        "CreatePayout": _object({"source": _text(64), "amount": amount, "currency": currency,
                                 "destination": _text(128, pattern=BANK_ACCOUNT)}),
        "CreateRefund": _object({"payment_order": _text(64), "amount": {**amount, "type": ["integer", "null"],
                                 "description": "Minor units; all that is left of the order when absent."}},
                                ["payment_order"]),
        "PspEvent": {"type": "object", "description": "The PSP's signed event (../shared/PSP.md)."},
    }  # fmt: skip


def response_schemas() -> Schema:
    integer, string, nullable = {"type": "integer"}, {"type": "string"}, {"type": ["string", "null"]}
    currency = _ref("Currency")
    order = _object({
        "id": string, "object": {"const": "payment_order"}, "payment": string, "destination": string,
        "amount": integer, "currency": currency, "reference": nullable,
        "status": {"enum": ["processing", "succeeded", "failed"]}, "failure_code": nullable,
        "amount_refunded": integer, "created": integer,
    })  # fmt: skip
    return {
        "PaymentOrder": order,
        "Payment": _object({
            "id": string, "object": {"const": "payment"}, "payment_method": string,
            "status": {"enum": ["processing", "succeeded", "partially_failed", "failed"]},
            "orders": {"type": "array", "items": _ref("PaymentOrder")}, "created": integer,
        }),
        "CheckoutSession": _object({
            "id": string, "object": {"const": "checkout_session"}, "amount": integer, "currency": currency,
            "return_url": string, "psp_session": string, "psp_token": string, "redirect_url": string,
        }),
        "Payout": _object({
            "id": string, "object": {"const": "payout"}, "source": string, "amount": integer, "currency": currency,
            "destination": string, "status": {"enum": ["processing", "paid", "failed"]}, "failure_code": nullable,
            "created": integer,
        }),
        "Refund": _object({
            "id": string, "object": {"const": "refund"}, "payment_order": string, "amount": integer,
            "currency": currency, "status": {"enum": ["processing", "succeeded", "failed"]},
            "failure_code": nullable, "created": integer,
        }),
        "WebhookReceipt": _object({"received": {"const": True}, "result": string}),
    }  # fmt: skip
