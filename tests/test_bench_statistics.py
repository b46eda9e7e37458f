"""The bench's arithmetic: a case measured in turns is summed and its latency pooled correctly (bench/run.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).resolve().parent.parent / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench  # its dataclasses look their module up there
_spec.loader.exec_module(bench)

GRID = [float(percent) for percent in range(1, 101)]


def turn(requests: int, latency_us, *, seconds: float = 5.0, statuses=None, socket_errors=None) -> dict:
    """One wrk turn as wrk.lua reports it; ``latency_us`` maps a percentile of the grid to its latency."""
    return {
        "requests": requests,
        "duration_us": int(seconds * 1e6),
        "latency_us": {name: latency_us(percent) for name, percent in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0),
                                                                        ("max", 100.0))},
        "quantiles_us": [[percent, latency_us(percent)] for percent in GRID],
        "statuses": statuses if statuses is not None else {200: requests},
        "socket_errors": socket_errors or {"connect": 0, "read": 0, "write": 0, "timeout": 0},
        "worker_cpu_s": requests * 0.001,
    }


def test_one_turn_keeps_its_own_quantiles():
    only = turn(1000, lambda percent: int(percent * 10))

    assert bench.pooled_quantile([only], 50) == 500
    assert bench.pooled_quantile([only], 99) == 990
    assert bench.pooled_quantile([only], 100) == 1000


def test_turns_are_pooled_by_their_number_of_requests():
    fast = turn(900, lambda percent: 1_000)
    slow = turn(100, lambda percent: 10_000)

    # 90 % of the requests took 1 ms: the median is fast, the 95th and 99th percentiles are the slow turn's.
    assert bench.pooled_quantile([fast, slow], 50) == 1_000
    assert bench.pooled_quantile([fast, slow], 89) == 1_000
    assert bench.pooled_quantile([fast, slow], 95) == 10_000
    assert bench.pooled_quantile([slow, fast], 99) == 10_000


def test_a_slow_turn_with_few_requests_moves_the_median_little():
    turns = [turn(1000, lambda percent: 2_000), turn(1000, lambda percent: 2_000), turn(10, lambda percent: 50_000)]

    assert bench.pooled_quantile(turns, 50) == 2_000
    assert bench.pooled_quantile(turns, 99.9) == 50_000


def test_a_summary_adds_requests_time_statuses_and_errors_over_the_turns():
    case = bench.Case("signed", "signed", "10", "/api/v2/accounts/list", "POST", 200)
    turns = [
        turn(1000, lambda percent: 3_000, seconds=5),
        turn(500, lambda percent: 6_000, seconds=5, statuses={200: 498, 500: 2},
             socket_errors={"connect": 0, "read": 1, "write": 0, "timeout": 0}),
    ]

    result = bench.summarize(case, turns)

    assert result["requests"] == 1500
    assert result["rps"] == pytest.approx(150.0)
    assert result["statuses"] == {200: 1498, 500: 2}
    assert result["unexpected_status"] == 2
    assert result["errors"] == 3
    assert result["p50_ms"] == 3.0
    assert result["p99_ms"] == 6.0
    assert result["max_ms"] == 6.0
    assert result["worker_cpu_ms"] == pytest.approx(1.0)
    assert [round(part["rps"]) for part in result["slices"]] == [200, 100]
