"""The payments bench's arithmetic, on made-up timestamps: what counts as measured, created, finished and end
to end, the stages of a payment's way, and CPU per payment. `make bench ARGS="--scenario payments"` runs the
real thing against real processes."""

from __future__ import annotations

from loadtest import bench_load
from loadtest.bench_payments_report import Order, cpu_per_payment, end_to_end, percentiles

WINDOW = (1000.0, 1010.0)


def test_percentiles_are_nearest_rank() -> None:
    got = percentiles([float(v) for v in range(1, 101)])
    assert (got["n"], got["p50"], got["p90"], got["p99"], got["max"], got["mean"]) == (100, 50, 90, 99, 100, 50.5)
    assert percentiles([7.0])["p99"] == 7.0
    assert percentiles([])["n"] == 0


def test_only_payments_created_in_the_window_are_measured_and_finals_count_where_they_land() -> None:
    created = {"pay_warm": 998.0, "pay_a": 1001.0, "pay_b": 1009.0, "pay_late": 1011.0}
    orders = [
        Order("po_warm", "pay_warm", "succeeded", 998.01, 1000.5),  # a warm-up payment finishing in the window
        Order("po_a", "pay_a", "succeeded", 1001.01, 1001.1),
        Order("po_b", "pay_b", "succeeded", 1009.02, 1014.0),  # finished after the load: end to end, not "in"
        Order("po_late", "pay_late", "succeeded", 1011.0, 1011.1),
    ]
    charged = {"po_a": 1001.05, "po_b": 1013.0}
    got = end_to_end(created, orders, charged, WINDOW)
    assert (got["created"], got["completed"], got["unfinished"]) == (2, 2, 0)
    assert got["created_per_s"] == 0.2
    assert (got["finished"], got["finished_per_s"]) == (2, 0.2)  # pay_warm and pay_a
    assert got["end_to_end_s"] == 14.0 and got["end_to_end_per_s"] == round(2 / 14, 1)
    assert got["to_final_ms"]["n"] == 2 and got["to_final_ms"]["max"] == 5000.0
    assert got["stages_ms"]["placed"]["max"] == 20.0
    assert got["stages_ms"]["charged"]["p50"] == 40.0  # po_a: 1001.01 -> 1001.05
    assert got["stages_ms"]["final"]["max"] == 1000.0  # po_b: 1013.0 -> 1014.0
    assert got["finals_timeline"][0] == 1 and got["finals_timeline"][1] == 1 and sum(got["finals_timeline"]) == 2


def test_a_payment_is_final_when_its_last_order_is() -> None:
    created = {"pay_1": 1001.0, "pay_2": 1002.0}
    orders = [
        Order("po_1a", "pay_1", "succeeded", 1001.0, 1001.2),
        Order("po_1b", "pay_1", "failed", 1001.0, 1003.0),
        Order("po_2a", "pay_2", "succeeded", 1002.0, 1002.5),
        Order("po_2b", "pay_2", "processing", 1002.0, None),
    ]
    got = end_to_end(created, orders, {}, WINDOW)
    assert (got["completed"], got["unfinished"]) == (1, 1)
    assert got["to_final_ms"]["max"] == 2000.0  # pay_1: 1001.0 -> 1003.0, its second order
    assert got["stages_ms"]["charged"]["n"] == 0  # no charge recorded: no stage after placement


def test_cpu_per_payment_divides_each_process_and_the_machine_by_the_measured_payments() -> None:
    processes = [{"process": "executor", "cpu_s": 1.5}, {"process": "psp-sim", "cpu_s": 0.5}]
    cpu = {"busy_cpu_s": 3.0, "processes": processes}
    rows = {row["process"]: row["us"] for row in cpu_per_payment(cpu, 500)}
    assert rows == {"executor": 3000, "psp-sim": 1000, "total (busy CPU of the machine)": 6000}
    assert cpu_per_payment(cpu, 0) == []


def test_a_rate_is_a_pause_per_connection() -> None:
    assert bench_load.delay_ms(16, 30) == 533  # 16 connections, each a request every 0.53 s: 30/s
    assert bench_load.delay_ms(64, 0) == 0
