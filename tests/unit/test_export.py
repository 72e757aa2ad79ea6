"""`powabot feedback export`: one row per rating, as CSV or JSON Lines, from the store alone."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.export import COLUMNS, write_csv, write_jsonl
from bot.store.base import AnswerRecord, ExportRow, Feedback, ThreadKey
from bot.store.sqlite import SqliteStore

KEY = ThreadKey("T1", "C1", "1700000000.000100", "U0ALICE")
REPLY = "1700000000.000300"


def row(**changes: object) -> ExportRow:
    values: dict[str, object] = {
        "rated_at": datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
        "team_id": "T1",
        "channel_id": "C1",
        "thread_ts": KEY.thread_ts,
        "asker_id": "U0ALICE",
        "rater_id": "U0BOB",
        "rating": -1,
        "run_id": "orch_run_1",
        "question": "How long is the refund window?",
        "answer": "30 days.\nAsk billing for more.",
        "specialists": ("billing-agent", "product-agent"),
        "sources": ("Refunds FAQ (billing-kb) <https://ex.com/r>", "Plans (product-kb)"),
        "tokens": 812,
        "escalations": 1,
    }
    values.update(changes)
    return ExportRow(**values)  # type: ignore[arg-type]


def test_csv_has_the_columns_and_one_line_per_rating() -> None:
    """CSV: a header naming every column, then each rating with lists joined by "; " and the
    rating in words; a multi-line answer survives the round trip."""
    out = io.StringIO()
    assert write_csv([row(), row(rating=1, rater_id="U0ALICE", tokens=None)], out) == 2
    header, bad, good = list(csv.reader(io.StringIO(out.getvalue())))
    assert tuple(header) == COLUMNS
    record = dict(zip(header, bad, strict=True))
    assert record["rating"] == "bad" and record["rater"] == "U0BOB"
    assert record["rated_at"] == "2026-03-01T09:30:00+00:00"
    assert record["specialists"] == "billing-agent; product-agent"
    assert record["sources"] == "Refunds FAQ (billing-kb) <https://ex.com/r>; Plans (product-kb)"
    assert record["answer"] == "30 days.\nAsk billing for more."
    assert (record["tokens"], record["escalations"]) == ("812", "1")
    assert dict(zip(header, good, strict=True))["rating"] == "good"
    assert dict(zip(header, good, strict=True))["tokens"] == ""


def test_csv_cells_never_run_as_spreadsheet_formulas() -> None:
    """A question a user wrote as a formula is exported as text, not as a formula."""
    out = io.StringIO()
    write_csv([row(question='=HYPERLINK("https://evil.example","x")', answer="-1 refund")], out)
    _, line = list(csv.reader(io.StringIO(out.getvalue())))
    record = dict(zip(COLUMNS, line, strict=True))
    assert record["question"] == '\'=HYPERLINK("https://evil.example","x")'
    assert record["answer"] == "'-1 refund"


def test_jsonl_is_one_object_per_rating_with_lists_kept() -> None:
    """JSON Lines: one object per line with the same columns; lists stay lists."""
    out = io.StringIO()
    assert write_jsonl([row(), row(rating=1, run_id=None)], out) == 2
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert tuple(first) == COLUMNS
    assert first["specialists"] == ["billing-agent", "product-agent"]
    assert first["rating"] == "bad" and first["tokens"] == 812
    assert second["rating"] == "good" and second["run_id"] is None


def test_a_bad_since_date_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`--since` that is not a YYYY-MM-DD date exits 2 saying what it expected."""
    with pytest.raises(SystemExit) as exited:
        main(["feedback", "export", "--since", "last tuesday"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--since" in err and "expected a date like 2026-01-31" in err
    assert "Traceback" not in err


async def _rated_store(path: Path) -> None:
    """A SQLite store with one answer rated by two users."""
    store = SqliteStore(f"sqlite:///{path}")
    await store.open()
    try:
        await store.reserve_session(KEY, "orch_sess_1", "Refund window")
        await store.record_answer(
            AnswerRecord(
                key=KEY,
                reply_ts=REPLY,
                run_id="orch_run_1",
                question="How long is the refund window?",
                answer="30 days.",
                status="done",
                specialists=("billing-agent",),
                sources=("Refunds FAQ (billing-kb) <https://ex.com/r>",),
                tokens=512,
            )
        )
        for rater, rating in (("U0ALICE", 1), ("U0BOB", -1)):
            assert await store.record_feedback(Feedback("T1", "C1", REPLY, rater, rating))
    finally:
        await store.close()


def test_export_reads_the_store_alone_in_both_formats_and_since_filters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With only POWABOT_STORE set (no Slack or Powabase settings) the export prints every
    rating as JSON Lines or CSV (or writes it to a file), and --since leaves out older ones."""
    db = tmp_path / "sessions.db"
    asyncio.run(_rated_store(db))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POWABOT_STORE", f"sqlite:///{db}")

    assert main(["feedback", "export", "--format", "jsonl"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["rater"], r["rating"]) for r in lines] == [("U0ALICE", "good"), ("U0BOB", "bad")]
    assert lines[0]["question"] == "How long is the refund window?"
    assert lines[0]["sources"] == ["Refunds FAQ (billing-kb) <https://ex.com/r>"]
    assert lines[0]["tokens"] == 512 and lines[0]["run_id"] == "orch_run_1"
    assert "exported 2 ratings" in err

    today = datetime.now(UTC).date()
    assert main(["feedback", "export", "--since", str(today + timedelta(days=1))]) == 0
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [list(COLUMNS)]

    target = tmp_path / "ratings.csv"
    since = str(today - timedelta(days=1))
    assert main(["feedback", "export", "--since", since, "--output", str(target)]) == 0
    assert capsys.readouterr().out == ""
    header, *rows = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert tuple(header) == COLUMNS and len(rows) == 2
