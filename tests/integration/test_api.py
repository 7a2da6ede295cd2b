"""Every API.md rule for wallets and transfers, bad input included, against the real gateway."""

from __future__ import annotations

import httpx
import pytest

from shards.pools import Shards
from tests.conftest import key, new_wallet, post


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    assert set(error) == {"type", "code", "message", "param", "request_id"}
    assert error["request_id"] == response.headers["x-request-id"]
    return error


async def test_wallet_create_get_and_shape(client: httpx.AsyncClient) -> None:
    created = await post(client, "/v1/wallets", {"currency": "EUR", "reference": "seller-42", "metadata": {"a": "b"}})
    assert created.status_code == 201
    wallet = created.json()
    assert wallet["id"].startswith("wal_") and wallet["object"] == "wallet"
    assert (wallet["currency"], wallet["available"], wallet["pending"]) == ("EUR", 0, 0)
    assert wallet["reference"] == "seller-42" and wallet["metadata"] == {"a": "b"}
    fetched = await client.get(f"/v1/wallets/{wallet['id']}")
    assert fetched.status_code == 200 and fetched.json() == wallet
    for header in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "x-request-id"):
        assert header in fetched.headers


async def test_same_shard_transfer_moves_money_and_lists_entries(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=1_000, shard=0)
    destination = await new_wallet(client, shards, shard=0)
    body = {"source": source, "destination": destination, "amount": 250, "currency": "USD", "description": "rent"}
    response = await post(client, "/v1/transfers", body)
    assert response.status_code == 201, response.text
    transfer = response.json()
    assert transfer["status"] == "succeeded" and transfer["id"].startswith("tr_")
    assert (await client.get(f"/v1/transfers/{transfer['id']}")).json() == transfer
    assert (await client.get(f"/v1/wallets/{source}")).json()["available"] == 750
    assert (await client.get(f"/v1/wallets/{destination}")).json()["available"] == 250
    entries = (await client.get(f"/v1/wallets/{source}/entries")).json()
    assert entries["object"] == "list" and entries["has_more"] is False
    assert [e["amount"] for e in entries["data"]] == [-250, 1_000]  # newest first


async def test_cross_shard_transfer_succeeds(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=500, shard=1)
    destination = await new_wallet(client, shards, shard=2)
    response = await post(client, "/v1/transfers", {"source": source, "destination": destination, "amount": 500,
                                                     "currency": "USD"})  # fmt: skip
    assert response.status_code == 201 and response.json()["status"] == "succeeded"
    assert (await client.get(f"/v1/wallets/{destination}")).json()["available"] == 500


async def test_entries_pagination(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=100, shard=3)
    destination = await new_wallet(client, shards, shard=3)
    for _ in range(5):
        await post(
            client, "/v1/transfers", {"source": source, "destination": destination, "amount": 1, "currency": "USD"}
        )
    first = (await client.get(f"/v1/wallets/{source}/entries", params={"limit": 4})).json()
    assert len(first["data"]) == 4 and first["has_more"] is True
    rest = (await client.get(f"/v1/wallets/{source}/entries",
                             params={"limit": 4, "starting_after": first["data"][-1]["id"]})).json()  # fmt: skip
    assert len(rest["data"]) == 2 and rest["has_more"] is False
    assert {e["id"] for e in first["data"]}.isdisjoint(e["id"] for e in rest["data"])


async def test_insufficient_funds_moves_nothing(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=99)
    destination = await new_wallet(client, shards)
    response = await post(client, "/v1/transfers", {"source": source, "destination": destination, "amount": 100,
                                                     "currency": "USD"})  # fmt: skip
    assert response.status_code == 402
    assert error_of(response)["code"] == "insufficient_funds"
    assert (await client.get(f"/v1/wallets/{source}")).json()["available"] == 99
    assert (await client.get(f"/v1/wallets/{destination}")).json()["available"] == 0


@pytest.mark.parametrize("amount", [10.5, 10.0, "10", True, False, 0, -1, 10**15 + 1, 10**30, None, [], {}])
async def test_bad_amounts_are_400(client: httpx.AsyncClient, shards: Shards, amount: object) -> None:
    source = await new_wallet(client, shards, funds=10)
    destination = await new_wallet(client, shards)
    body = {"source": source, "destination": destination, "currency": "USD", "amount": amount}
    response = await post(client, "/v1/transfers", body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "amount" or error["code"] == "invalid_json"
    assert (await client.get(f"/v1/wallets/{source}")).json()["available"] == 10


async def test_max_amount_is_accepted(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=10**15)
    destination = await new_wallet(client, shards)
    response = await post(client, "/v1/transfers", {"source": source, "destination": destination, "amount": 10**15,
                                                     "currency": "USD"})  # fmt: skip
    assert response.status_code == 201


@pytest.mark.parametrize("currency", ["usd", "XXX", "US", 840, None, ""])
async def test_bad_currency_is_400(client: httpx.AsyncClient, currency: object) -> None:
    response = await post(client, "/v1/wallets", {"currency": currency})
    assert response.status_code == 400
    assert error_of(response)["param"] == "currency"


async def test_currency_mismatch(client: httpx.AsyncClient, shards: Shards) -> None:
    source = await new_wallet(client, shards, funds=10, currency="USD", shard=0)
    same_shard_eur = await new_wallet(client, shards, currency="EUR", shard=0)
    other_shard_eur = await new_wallet(client, shards, currency="EUR", shard=1)
    for destination, currency in ((same_shard_eur, "USD"), (other_shard_eur, "USD"), (same_shard_eur, "EUR")):
        body = {"source": source, "destination": destination, "amount": 1, "currency": currency}
        response = await post(client, "/v1/transfers", body)
        assert response.status_code == 400, response.text
        assert error_of(response)["code"] == "currency_mismatch"


async def test_supported_currencies(client: httpx.AsyncClient) -> None:
    codes = {c["code"] for c in (await client.get("/v1/currencies")).json()["data"]}
    assert {"USD", "EUR", "GBP", "JPY", "KWD"} <= codes


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [(b"{not json", "application/json"), (b"[1, 2]", "application/json"), (b'"text"', "application/json"),
     (b"\xff\xfe", "application/json"), (b"a=b", "application/x-www-form-urlencoded")],
)  # fmt: skip
async def test_malformed_json_is_400(client: httpx.AsyncClient, raw: bytes, content_type: str) -> None:
    response = await client.post("/v1/wallets", content=raw,
                                 headers={"Idempotency-Key": key(), "Content-Type": content_type})  # fmt: skip
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


async def test_unknown_and_missing_parameters(client: httpx.AsyncClient) -> None:
    unknown = await post(client, "/v1/wallets", {"currency": "USD", "colour": "red"})
    assert unknown.status_code == 400 and error_of(unknown)["param"] == "colour"
    missing = await post(client, "/v1/transfers", {"amount": 1, "currency": "USD"})
    assert missing.status_code == 400 and error_of(missing)["code"] == "parameter_missing"


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    big = {"currency": "USD", "reference": "x" * (70 * 1024)}
    response = await post(client, "/v1/wallets", big)
    assert response.status_code == 413
    assert error_of(response)["code"] == "body_too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(80):
            yield b" " * 1024

    streamed = await client.post("/v1/wallets", content=chunks(), headers={"Idempotency-Key": key()})
    assert streamed.status_code == 413


@pytest.mark.parametrize("idem", [None, "", "k" * 256, "tab\there", "é".encode()])
async def test_missing_or_bad_idempotency_key_is_400(client: httpx.AsyncClient, idem: str | bytes | None) -> None:
    headers = {} if idem is None else {"Idempotency-Key": idem}
    response = await client.post("/v1/wallets", json={"currency": "USD"}, headers=headers)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["param"] == "Idempotency-Key"
    if not idem:
        assert error["code"] == "idempotency_key_missing"


async def test_longest_idempotency_key_is_accepted(client: httpx.AsyncClient) -> None:
    response = await post(client, "/v1/wallets", {"currency": "USD"}, idem="k" * 255)
    assert response.status_code == 201


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer sk_nope", "Basic abc", "sk_nope"])
async def test_bad_api_key_is_401(gateway: str, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with httpx.AsyncClient(base_url=gateway) as anonymous:
        response = await anonymous.get("/v1/currencies", headers=headers)
    assert response.status_code == 401
    assert error_of(response)["code"] == "api_key_invalid"


async def test_another_merchants_objects_are_404(client: httpx.AsyncClient, shards: Shards, gateway: str) -> None:
    from shards.control import create_merchant

    mine = await new_wallet(client, shards, funds=100)
    transfer = await post(client, "/v1/transfers", {"source": mine, "destination": await new_wallet(client, shards),
                                                    "amount": 1, "currency": "USD"})  # fmt: skip
    other = await create_merchant(shards.control, "other", None, 1000, 1000)
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {other.api_key}"}) as theirs:
        theirs_wallet = (await post(theirs, "/v1/wallets", {"currency": "USD"})).json()["id"]
        for path in (f"/v1/wallets/{mine}", f"/v1/wallets/{mine}/entries", f"/v1/transfers/{transfer.json()['id']}"):
            response = await theirs.get(path)
            assert response.status_code == 404 and error_of(response)["code"] == "resource_missing"
        stolen = await post(theirs, "/v1/transfers", {"source": mine, "destination": theirs_wallet, "amount": 1,
                                                      "currency": "USD"})  # fmt: skip
        assert stolen.status_code == 404
        pushed = await post(theirs, "/v1/transfers", {"source": theirs_wallet, "destination": mine, "amount": 1,
                                                      "currency": "USD"})  # fmt: skip
        assert pushed.status_code == 404
    assert (await client.get(f"/v1/wallets/{mine}")).json()["available"] == 99


@pytest.mark.parametrize(
    "object_id", ["wal_nope", "wal_" + "0" * 24, "tr_" + "f" * 24, "x" * 300, "wal_ffff" + "0" * 20]
)
async def test_unknown_ids_are_404(client: httpx.AsyncClient, object_id: str) -> None:
    for path in (f"/v1/wallets/{object_id}", f"/v1/wallets/{object_id}/entries", f"/v1/transfers/{object_id}"):
        response = await client.get(path)
        assert response.status_code == 404, (path, response.text)


async def test_transfer_to_itself_and_unknown_wallets(client: httpx.AsyncClient, shards: Shards) -> None:
    wallet = await new_wallet(client, shards, funds=10)
    itself = await post(
        client, "/v1/transfers", {"source": wallet, "destination": wallet, "amount": 1, "currency": "USD"}
    )
    assert itself.status_code == 400 and error_of(itself)["param"] == "destination"
    ghost = "wal_0000" + "0" * 20
    for body in ({"source": ghost, "destination": wallet}, {"source": wallet, "destination": ghost}):
        response = await post(client, "/v1/transfers", {**body, "amount": 1, "currency": "USD"})
        assert response.status_code == 404


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "1.5"])
async def test_bad_entries_limit_is_400(client: httpx.AsyncClient, shards: Shards, limit: str) -> None:
    wallet = await new_wallet(client, shards)
    response = await client.get(f"/v1/wallets/{wallet}/entries", params={"limit": limit})
    assert response.status_code == 400 and error_of(response)["param"] == "limit"


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/currencies", headers={"X-Request-Id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
