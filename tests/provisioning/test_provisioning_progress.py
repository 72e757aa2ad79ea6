"""Progress output: a redrawn bar on terminals, one line per step elsewhere."""

from __future__ import annotations

import io

from provisioning.progress import BarProgress, LineProgress, make_progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_count_finished_items() -> None:
    """Without a terminal each step is its own line with a done/total counter."""
    out = io.StringIO()
    progress = LineProgress(out)
    progress.begin("sources", 2)
    progress.step("billing-kb/a.md", "uploaded")
    progress.step("billing-kb/a.md", "extracted and attached", done=True)
    progress.note("created agent billing-agent")
    assert out.getvalue().splitlines() == [
        "sources: 2 to go",
        "[0/2] billing-kb/a.md: uploaded",
        "[1/2] billing-kb/a.md: extracted and attached",
        "created agent billing-agent",
    ]


def test_bar_redraws_one_line_and_keeps_notes_above_it() -> None:
    """On a terminal the bar is redrawn in place, notes print above it, end() ends the line."""
    out = Tty()
    progress = make_progress(out)
    assert isinstance(progress, BarProgress)
    progress.begin("sources", 4)
    progress.step("billing-kb/a.md", "extracted", done=True)
    progress.note("warning: something")
    progress.end()
    text = out.getvalue()
    assert "sources [######------------------] 1/4  billing-kb/a.md extracted" in text
    assert "warning: something\n" in text
    assert text.endswith("\n") and text.count("\n") == 2


def test_plain_streams_get_lines() -> None:
    """A pipe or file gets the line-per-step reporter."""
    assert isinstance(make_progress(io.StringIO()), LineProgress)
