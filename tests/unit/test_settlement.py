"""The settlement file's rules on fakes: what a good line is, how each bad one is named, how a run reads a file
(the day known before the first line is staged), how its figures add up, and when the daily run is due."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pytest

from shardpay.config import ConfigError, Settings
from shardpay.domain.settlement import HEADER, MalformedFile, check_day, check_header, parse_day, parse_line
from shardpay.services.reconcile.daily import due_day, next_due
from shardpay.services.reconcile.run import Request, read, summarise
from shardpay.services.reconcile.source import BadInput, FileSource
from shardpay.supervisor import default_children as children

GOOD = "ch_1,po_000a0123456789abcdef0123,charge,1250,USD,66,settled,2026-12-03T10:11:12.345Z"


def test_a_good_line() -> None:
    line = parse_line(GOOD, 2)
    assert (line.line_no, line.psp_reference, line.reference, line.type) == (2, "ch_1", "po_000a0123456789abcdef0123",
                                                                             "charge")  # fmt: skip
    assert (line.amount, line.currency, line.fee, line.status) == (1250, "USD", 66, "settled")
    assert line.settled_at == datetime(2026, 12, 3, 10, 11, 12, 345000, tzinfo=UTC)


def test_quoted_fields_a_crlf_end_and_plus_zero_are_read() -> None:
    line = parse_line('"ch_1","po_x",charge,"10",KWD,0,failed,2026-12-03T00:00:00+00:00\r', 7)
    assert (line.reference, line.amount, line.currency, line.status) == ("po_x", 10, "KWD", "failed")
    assert line.settled_at == datetime(2026, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize(("text", "field", "value"), [
    (GOOD.replace("1250", "12.50"), "amount", "12.50"),
    (GOOD.replace("1250", "-1250"), "amount", "-1250"),
    (GOOD.replace("1250", "0"), "amount", "0"),
    (GOOD.replace("1250", "1e3"), "amount", "1e3"),
    (GOOD.replace("1250", "99999999999999999"), "amount", "99999999999999999"),
    (GOOD.replace(",66,", ",6.6,"), "fee", "6.6"),
    (GOOD.replace("USD", "usd"), "currency", "usd"),
    (GOOD.replace("USD", "XYZ"), "currency", "XYZ"),
    (GOOD.replace("charge", "dispute"), "type", "dispute"),
    (GOOD.replace("settled", "pending"), "status", "pending"),
    (GOOD.replace("2026-12-03T10:11:12.345Z", "2026-12-03 10:11:12"), "settled_at", "2026-12-03 10:11:12"),
    (GOOD.replace("2026-12-03T10:11:12.345Z", "2026-13-03T10:11:12Z"), "settled_at", "2026-13-03T10:11:12Z"),
    (GOOD.replace("2026-12-03T10:11:12.345Z", "2026-12-03T10:11:12+01:00"), "settled_at", "2026-12-03T10:11:12+01:00"),
    (GOOD.replace("ch_1", ""), "psp_reference", ""),
    (GOOD.replace("po_000a0123456789abcdef0123", "po x"), "reference", "po x"),
])  # fmt: skip
def test_a_bad_field_is_named_with_its_line_and_value(text: str, field: str, value: str) -> None:
    with pytest.raises(MalformedFile) as caught:
        parse_line(text, 42)
    assert (caught.value.line, caught.value.field, caught.value.value) == (42, field, value)
    assert str(caught.value).startswith(f"line 42, field '{field}': {value!r}")


@pytest.mark.parametrize("text", ["", "ch_1,po_x,charge", GOOD + ",extra", 'ch_1,"po_x,charge,1,USD,0,settled,x'])
def test_a_line_of_the_wrong_shape_is_named_whole(text: str) -> None:
    with pytest.raises(MalformedFile) as caught:
        parse_line(text, 3)
    assert caught.value.line == 3 and caught.value.field is None and caught.value.value == text


def test_the_header_and_the_day() -> None:
    check_header(HEADER)
    check_header(HEADER + "\r")
    with pytest.raises(MalformedFile) as caught:
        check_header(HEADER.replace("fee", "fees"))
    assert caught.value.line == 1
    check_day(parse_line(GOOD, 2), date(2026, 12, 3))
    with pytest.raises(MalformedFile, match="is not on 2026-12-04"):
        check_day(parse_line(GOOD, 2), date(2026, 12, 4))
    assert parse_day("2026-12-03") == date(2026, 12, 3)
    for bad in ("2026-02-30", "2026-2-3", "20261203", "yesterday"):
        with pytest.raises(ValueError, match=bad):
            parse_day(bad)


async def _all(source: FileSource) -> list[str]:
    return [line async for line in source.lines()]


async def test_a_file_cut_inside_a_line_not_utf8_or_with_nul_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    for content, line in ((f"{HEADER}\n{GOOD}".encode(), 2), (f"{HEADER}\n".encode() + b"\xff\n", 2),
                          (f"{HEADER}\nch\x00\n".encode(), 2)):  # fmt: skip
        path.write_bytes(content)
        with pytest.raises(MalformedFile) as caught:
            await _all(FileSource(str(path)))
        assert caught.value.line == line
    path.write_bytes(f"{HEADER}\n{GOOD}\n".encode())
    assert await _all(FileSource(str(path))) == [HEADER, GOOD]
    with pytest.raises(BadInput, match=r"nowhere\.csv"):
        await _all(FileSource(str(tmp_path / "nowhere.csv")))


class _Lines:
    name = "fake"

    def __init__(self, *lines: str) -> None:
        self._lines = lines

    async def lines(self) -> AsyncGenerator[str, None]:
        for line in self._lines:
            yield line


class _Staging:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def add(self, line: Any) -> None:
        self.log.append(("add", line.line_no))


async def test_the_day_is_known_and_begun_before_the_first_line_is_staged() -> None:
    log: list[Any] = []

    async def begin(day: date) -> None:
        log.append(("begin", day))

    day = await read(Request(_Lines(HEADER, GOOD, GOOD.replace("ch_1", "ch_2")), None), _Staging(log), begin)  # type: ignore[arg-type]
    assert day == date(2026, 12, 3) and log == [("begin", day), ("add", 2), ("add", 3)]
    log.clear()
    with pytest.raises(MalformedFile) as caught:
        await read(Request(_Lines(HEADER, GOOD, "bad"), date(2026, 12, 3)), _Staging(log), begin)  # type: ignore[arg-type]
    assert caught.value.line == 3
    with pytest.raises(BadInput, match="--date"):
        await read(Request(_Lines(HEADER), None), _Staging(log), begin)  # type: ignore[arg-type]
    with pytest.raises(MalformedFile, match="empty"):
        await read(Request(_Lines(), date(2026, 12, 3)), _Staging(log), begin)  # type: ignore[arg-type]


def _row(category: str, records: int, fixed: int = 0, fees: int = 0) -> dict[str, Any]:
    return {"category": category, "currency": "USD", "records": records, "psp_amount": 100 * records,
            "our_amount": 100 * records, "fixed": fixed, "fee_lines": records if fees else 0, "fees": fees}  # fmt: skip


def test_the_figures_add_up_and_decide_the_exit_status() -> None:
    clean = summarise(10, [_row("matched", 8, fees=40), _row("missing_internal", 2, fixed=2)])  # type: ignore[list-item]
    assert (clean.records, clean.fixed, clean.needs_review, clean.exit_status) == (10, 2, 0, 0)
    assert clean.fees == {"booked": {"USD": {"lines": 8, "amount": 40}}}
    review = summarise(3, [_row("matched", 1), _row("amount_mismatch", 1), _row("missing_internal", 1)])  # type: ignore[list-item]
    assert (review.needs_review, review.exit_status) == (2, 1)  # a record not fixed needs review too
    assert review.counts["unknown_reference"] == 0 and review.totals["amount_mismatch"]["USD"]["records"] == 1


def test_the_daily_run_is_due_the_day_after_at_the_set_time() -> None:
    at = time(1, 0)
    assert due_day(datetime(2026, 12, 3, 0, 59, tzinfo=UTC), at) == date(2026, 12, 1)
    assert due_day(datetime(2026, 12, 3, 1, 0, tzinfo=UTC), at) == date(2026, 12, 2)
    assert next_due(datetime(2026, 12, 3, 0, 59, tzinfo=UTC), at) == datetime(2026, 12, 3, 1, 0, tzinfo=UTC)
    assert next_due(datetime(2026, 12, 3, 1, 0, tzinfo=UTC), at) == datetime(2026, 12, 4, 1, 0, tzinfo=UTC)


def test_shardpay_run_starts_the_reconciler_unless_it_is_off() -> None:
    assert children({})["reconciler"] == ["reconcile", "--daily"]
    assert "reconciler" not in children({"SHARDPAY_RECONCILE_DAILY": "false"})
    assert Settings.from_env({"SHARDPAY_RECONCILE_AT": "23:59"}).reconcile_at == time(23, 59)
    for bad in ("24:00", "1:00", "noon"):
        with pytest.raises(ConfigError, match=f"SHARDPAY_RECONCILE_AT' has value '{bad}'"):
            Settings.from_env({"SHARDPAY_RECONCILE_AT": bad})
