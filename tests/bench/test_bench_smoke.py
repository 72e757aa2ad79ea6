"""The benchmark runs end to end at tiny sizes and produces every figure (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.config import quick
from bench.measure import CLASSIC
from bench.run import run_bench

REPO = Path(__file__).resolve().parents[2]
LATENCY_FIGURES = {
    "first_text_p50",
    "first_text_p99",
    "final_edit_p50",
    "final_edit_p99",
    "writes_per_answer",
    "writes_ratio",
}
EXPECTED_FIGURES = LATENCY_FIGURES | {
    "load_429",
    "load_exact",
    "load_duration",
    "one_channel_429",
    "one_channel_exact",
    "one_channel_duration",
    "streams_open_peak",
    "streams_peak_rss",
    "streams_lag_p99",
    "streams_429",
    "streams_exact",
    "chaos_complete",
    "chaos_notice",
    "chaos_lost",
    "replicas_runs",
    "replicas_exact",
    "replicas_429",
    "replicas_duplicates",
    "replicas_kill_exact",
    "replicas_resumed_p99",
    "replicas_takeover",
    "replicas_db_ms",
}
FIRST_WORDS_FIGURES = {
    f"{config}_{figure}"
    for config in ("first_words", "first_words_classic")
    for figure in (
        "first_text_p50",
        "first_text_p90",
        "first_text_p99",
        "first_text_max",
        "exact",
        "429",
        "notices",
        "delivery",
    )
}
EXPECTED_FIGURES |= FIRST_WORDS_FIGURES


# About 45 s here; its waits are bounded (the replicas phase gives a killed replica's answers up
# to 120 s), so a slow or stuck phase ends in an assertion naming it, not in the test timeout.
@pytest.mark.timeout(300)
async def test_quick_benchmark_measures_every_figure(tmp_path: Path) -> None:
    """A tiny run of every phase answers every question and reports a value for each figure."""
    cfg = quick().replace(
        latency_answers=3,
        answers=6,
        one_channel_answers=4,
        streams=8,
        chaos_answers=8,
        replicas_answers=6,
        replicas_kill_answers=6,
        first_words_answers=4,
    )
    report = await run_bench(cfg, tmp_path)
    by_key = {f.key: f for f in report.figures}
    assert set(by_key) == EXPECTED_FIGURES
    missing = [key for key, f in by_key.items() if f.value is None]
    assert not missing, f"figures without a measured value: {missing}"
    for name, result in report.results.items():
        assert result.finished == result.asked, f"{name}: {result.notes}"
        if name != "chaos":  # chaos runs fail on purpose; none may be lost
            assert all(o.run_status == "completed" for o in result.outcomes), name
    assert by_key["chaos_lost"].value == 0, report.to_json()["phases"]["chaos"]["chaos"]
    # first-words runs twice: the default configuration streams natively, the classic one never
    default, classic = report.results["first-words"], report.results["first-words-classic"]
    assert default.asked == classic.asked == 4
    assert any(o.delivery != CLASSIC for o in default.outcomes), default.outcomes
    assert all(o.delivery == CLASSIC for o in classic.outcomes), classic.outcomes
    replicas = report.to_json()["phases"]["replicas"]
    assert by_key["replicas_kill_exact"].passed, replicas  # every answer finished after SIGKILL
    document = report.to_json()
    assert {f["key"] for f in document["figures"]} == EXPECTED_FIGURES
    json.dumps(document)  # the --json document must be serialisable as is


def test_command_line_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    """`python -m bench --quick` prints a PASS/MISS table and writes the requested JSON file."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--phases",
            "latency",
            "--latency-answers",
            "2",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr[-2000:]
    assert "first answer delta" in done.stdout
    assert "time scale: latency phase x20" in done.stdout
    figures = json.loads(out.read_text())["figures"]
    assert {f["key"] for f in figures} == LATENCY_FIGURES
    assert all(f["result"] in ("PASS", "MISS", "info") for f in figures)
