"""`powabot feedback export`: every rating with its question and answer, as CSV or JSON Lines.

One row per rating (oldest first): when it was given, where (team, channel, thread), who asked
and who rated, the rating (good / bad), the Powabase run, the question and the answer, the
specialists that answered, the sources shown, the tokens used and how many times the
conversation was handed to a person. The data an admin needs to improve the knowledge bases or
to build an evaluation set.

Only the store settings are read (POWABOT_STORE, SUPABASE_*): no Slack or Powabase token is
needed. Logs go to stderr, so stdout holds nothing but the export. In CSV, lists are joined
with "; ", and a cell that a spreadsheet would run as a formula (it starts with =, +, -, @)
gets a leading apostrophe: questions and answers are text from users and the model.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, Literal, TextIO

from bot.store.base import ExportRow, SessionStore

Format = Literal["csv", "jsonl"]
COLUMNS = (
    "rated_at",
    "team",
    "channel",
    "thread",
    "asker",
    "rater",
    "rating",
    "run_id",
    "question",
    "answer",
    "specialists",
    "sources",
    "tokens",
    "escalations",
)
LIST_SEPARATOR = "; "
RATING_WORDS = {1: "good", -1: "bad"}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def parse_since(text: str) -> datetime:
    """``YYYY-MM-DD`` → that day's start in UTC; ValueError with a clear message otherwise."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a date like 2026-01-31, got {text!r}") from None
    if len(text.strip()) != 10:  # fromisoformat also takes 20260131 and 2026-W05-1
        raise ValueError(f"expected a date like 2026-01-31, got {text!r}")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def record(row: ExportRow) -> dict[str, Any]:
    """One rating as a JSON object (the keys are `COLUMNS`)."""
    rated_at = row.rated_at if row.rated_at.tzinfo else row.rated_at.replace(tzinfo=UTC)
    return {
        "rated_at": rated_at.astimezone(UTC).isoformat(),
        "team": row.team_id,
        "channel": row.channel_id,
        "thread": row.thread_ts,
        "asker": row.asker_id,
        "rater": row.rater_id,
        "rating": RATING_WORDS.get(row.rating, str(row.rating)),
        "run_id": row.run_id,
        "question": row.question,
        "answer": row.answer,
        "specialists": list(row.specialists),
        "sources": list(row.sources),
        "tokens": row.tokens,
        "escalations": row.escalations,
    }


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = LIST_SEPARATOR.join(str(item) for item in value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def write_csv(rows: Iterable[ExportRow], out: TextIO) -> int:
    """A header and one line per rating; returns the number of ratings written."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for row in rows:
        item = record(row)
        writer.writerow([_cell(item[column]) for column in COLUMNS])
        count += 1
    return count


def write_jsonl(rows: Iterable[ExportRow], out: TextIO) -> int:
    """One JSON object per line per rating; returns the number written."""
    count = 0
    for row in rows:
        out.write(json.dumps(record(row), ensure_ascii=False) + "\n")
        count += 1
    return count


def write(rows: Iterable[ExportRow], out: TextIO, fmt: Format) -> int:
    return write_csv(rows, out) if fmt == "csv" else write_jsonl(rows, out)


async def read_rows(store: SessionStore, since: datetime | None) -> list[ExportRow]:
    """Open the store, read every rating (since `since`), close it."""
    await store.open()
    try:
        return await store.feedback_export(since=since)
    finally:
        await store.close()


def main(*, since: datetime | None, fmt: Format, output: str) -> int:
    """`powabot feedback export`: the rows to `output` ("-": stdout), a count on stderr.

    Raises ConfigError (bad settings) and StoreError (store unreachable) for the CLI to report.
    """
    from bot.logs import configure_logging, secret_values
    from bot.settings import load_settings
    from bot.store import make_store

    settings = load_settings("feedback")
    configure_logging(settings.LOG_FORMAT, "warning", secrets=secret_values(settings))
    rows = asyncio.run(read_rows(make_store(settings), since))
    if output == "-":
        count = write(rows, sys.stdout, fmt)
        sys.stdout.flush()
    else:
        with open(output, "w", encoding="utf-8", newline="") as out:
            count = write(rows, out, fmt)
    where = "" if output == "-" else f" to {output}"
    print(f"powabot: exported {count} rating{'s' if count != 1 else ''}{where}", file=sys.stderr)
    return 0
