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
    assert result["drain_ms"] is None  # results written before the drain was measured


def test_a_summary_gives_the_mean_and_longest_wait_for_the_workers_after_a_turn():
    case = bench.Case("keys_page", "keys page", "10", "/m/bench-merchant/keys/")
    turns = [turn(100, lambda percent: 90_000), turn(100, lambda percent: 90_000), turn(100, lambda percent: 90_000)]
    for part, drain_s in zip(turns, (0.05, 0.1, 0.3)):
        part["drain_s"] = drain_s

    result = bench.summarize(case, turns)

    assert result["drain_ms"] == pytest.approx([150.0, 300.0])
    assert bench.drain_text(result) == "150 / 300"


class FakeClock:
    """time.monotonic and time.sleep for bench.run: sleeping moves the clock, nothing waits."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeWorkers:
    """Workers whose CPU ticks, read at each poll, go on rising for ``busy_polls`` polls, then stop."""

    def __init__(self, busy_polls: int):
        self.reads = 0
        self.busy_polls = busy_polls

    def workers_cpu_ticks(self) -> int:
        self.reads += 1
        return min(self.reads, self.busy_polls)


@pytest.mark.parametrize("busy_polls", [1, 5, 40])
def test_the_next_turn_waits_until_the_workers_have_been_idle_for_the_quiet_time(monkeypatch, busy_polls):
    clock = FakeClock()
    monkeypatch.setattr(bench.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(bench.time, "sleep", clock.sleep)
    workers = FakeWorkers(busy_polls)

    waited = bench.Gunicorn.wait_until_idle(workers, quiet=0.03)

    # Busy until the last rising reading (a poll every 5 ms), then 30 ms with none.
    busy_until = 0.005 * (busy_polls - 1)
    assert busy_until + 0.03 - 1e-9 <= waited <= busy_until + 0.03 + 0.006


def test_workers_that_never_settle_hold_the_next_turn_back_only_until_the_limit(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(bench.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(bench.time, "sleep", clock.sleep)

    waited = bench.Gunicorn.wait_until_idle(FakeWorkers(busy_polls=10**9), quiet=0.03, limit=2.0)

    assert 2.0 - 1e-9 <= waited <= 2.006


def measured(*turn_rps: float, p99_ms: float = 5.0, cpu_ms: float = 1.0) -> dict:
    """A case as summarize() reports it, from the throughput of each of its turns."""
    return {"rps": sum(turn_rps) / len(turn_rps), "p99_ms": p99_ms, "worker_cpu_ms": cpu_ms,
            "slices": [{"rps": rps, "p99_ms": p99_ms} for rps in turn_rps],
            "host": [{"cores": 2.0, "loop_ms": 80}, {"cores": 2.0, "loop_ms": 80}]}


def test_a_ratio_the_same_in_every_turn_has_no_spread():
    low, high = bench.paired_interval(measured(900, 1800, 1350), measured(1000, 2000, 1500))

    assert low == pytest.approx(0.9)
    assert high == pytest.approx(0.9)


def test_the_interval_is_the_mean_log_ratio_of_the_turns_plus_or_minus_t_standard_errors():
    # Turn ratios 0.8 and 1.0: logs -0.2231 and 0; mean -0.1116, standard deviation 0.1578, standard error
    # 0.1116; t for one degree of freedom 12.706.
    low, high = bench.paired_interval(measured(800, 1000), measured(1000, 1000))

    assert low == pytest.approx(0.2167, abs=1e-4)
    assert high == pytest.approx(3.6916, abs=1e-4)


def test_turns_drifting_together_give_a_narrow_interval_where_the_totals_alone_would_not():
    # The host halves its speed between turns; the signed request stays at 0.9 × ping in each turn.
    ping = measured(2000, 1000, 2000, 1000)
    signed = measured(1800, 900, 1800, 900)

    low, high = bench.paired_interval(signed, ping)

    assert 0.89 < low <= high < 0.91


def test_no_interval_from_a_single_turn_or_from_turns_that_do_not_pair():
    assert bench.paired_interval(measured(900), measured(1000)) is None
    assert bench.paired_interval(measured(900, 950), measured(1000, 1000, 1000)) is None


def bench_run(signed_turns: tuple[float, ...]) -> dict:
    """A whole run's results, ping at 1,000 req/s in each turn and every other case at 0.95 × ping."""
    steady = (950.0,) * len(signed_turns)
    cases = {name: measured(*steady) for name in ("wrong_signature", "unknown_key", "signed_1k", "signed_100k",
                                                  "signed_10_control")}
    results = {"ping": measured(*(1000.0,) * len(signed_turns)), "signed": measured(*signed_turns), **cases}
    pages = {name: {"queries": 8} for name in ("keys_page", "keys_page_large", "activity_page", "activity_page_large")}
    probes = {**pages, **{name: {"queries": 1} for name in ("signed", "signed_1k", "signed_100k")}}
    return {"results": results, "probes": probes}


def verdict_of(run: dict, target_start: str) -> tuple[str, str]:
    _, targets = bench.evaluate(run)
    return next((verdict, text) for name, verdict, text in targets if name.startswith(target_start))


def test_a_target_inside_the_interval_is_reported_as_within_the_runs_noise():
    verdict, text = verdict_of(bench_run((800.0, 950.0, 820.0, 930.0)), "signed throughput")

    assert verdict == "**met**"  # 0.875 over the totals
    assert "within this run's noise (95 % interval: signed / ping 0." in text


def test_a_target_outside_the_interval_is_reported_without_doubt():
    verdict, text = verdict_of(bench_run((900.0, 905.0, 895.0, 900.0)), "signed throughput")

    assert verdict == "**met**"
    assert "noise" not in text
