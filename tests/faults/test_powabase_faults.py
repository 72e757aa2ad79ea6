"""Powabase failure modes, one test per fault, over real sockets with the real bot.

Each failure ends in a reply whose notice names the cause and what the user can do: Powabase in
trouble (5xx, 429, unreachable) → "try again in a few minutes"; our own settings refused
(401/403/404) → "not set up correctly … the team has been told"; another 4xx → "turned down";
a run that did not complete, stalled or broke off → the text that arrived plus a notice.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.powabase.client import MAX_FRAME_CHARS
from sandbox.powabase import PowabaseStandin
from sandbox.powabase.faults import PROXY_RESET_TEXT
from sandbox.slack import SlackStandin
from tests.conftest import running_bot
from tests.e2e.answers import ask, bot_replies, expected_text

QUESTION = "What is the refund window for Pro annual?"
TRY_LATER = "try again in a few minutes"
NOT_SET_UP = "I'm not set up correctly right now; the team has been told."
TURNED_DOWN = "turned this request down"
PARTIAL = "What you see above is partial."


async def reply(slack: SlackStandin, bot: Any, channel: str, text: str = QUESTION) -> list[str]:
    """Ask in a DM and return the texts of the bot's messages in that thread."""
    msg = await ask(slack, bot, channel, text)
    return [m.text for m in bot_replies(slack, channel, msg.ts)]


def streamed_before_cut(powabase: PowabaseStandin) -> str:
    """The final-answer text the last run sent before it was cut (after the delegation)."""
    payloads = powabase.runs[-1].event_payloads
    names = [p.get("event") for p in payloads]
    after = names.index("delegation_completed") if "delegation_completed" in names else 0
    return "".join(p["delta"] for p in payloads[after:] if p.get("event") == "content_delta")


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 with nobody listening: every connect is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


# --- Powabase in trouble: try again in a few minutes ---------------------------------------------


@pytest.mark.parametrize(("status", "attempts"), [(500, 1), (502, 3), (503, 3)])
async def test_a_powabase_5xx_says_try_again_in_a_few_minutes(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any, status: int, attempts: int
) -> None:
    """A 500 (not retried) or a 502/503 that outlasts the retries ends in "try again later"."""
    powabase.inject_run_fault("status", status=status, times=3)
    (answer,) = await reply(slack, bot, f"D0HTTP{status}")
    assert answer.startswith(":warning:") and TRY_LATER in answer
    assert str(status) not in answer
    assert len(powabase.runs) == attempts
    assert bot.alerts.blocked("powabase") is None  # Powabase's trouble, not our settings


async def test_a_503_once_is_retried_and_the_answer_arrives(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any
) -> None:
    """A single 503 before the stream costs the user nothing: the retry brings the answer."""
    powabase.inject_run_fault("status", status=503)
    (answer, *_trace) = await reply(slack, bot, "D0ONCE503")
    assert answer == expected_text(powabase.runs[-1].answer)
    assert [r.status for r in powabase.runs] == ["http_503", "completed"]


async def test_a_proxy_plain_text_503_says_try_again_in_a_few_minutes(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any
) -> None:
    """Envoy's plain-text 503 (no JSON body) is the same trouble, with the same advice."""
    powabase.inject_run_fault("text_status", status=503, body=PROXY_RESET_TEXT, times=3)
    (answer,) = await reply(slack, bot, "D0ENVOY")
    assert TRY_LATER in answer and "upstream connect" not in answer


async def test_a_429_with_retry_after_is_retried_then_says_try_again(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any
) -> None:
    """A proxy's 429 with `Retry-After` is retried; when it persists, "try again later"."""
    powabase.inject_run_fault("status", status=429, retry_after="0", times=3)
    (answer,) = await reply(slack, bot, "D0RATE")
    assert TRY_LATER in answer and "429" not in answer
    assert len(powabase.runs) == 3


async def test_an_unreachable_powabase_says_try_again_in_a_few_minutes(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path, refusing_port: int
) -> None:
    """Connection refused (after the retries) is trouble on Powabase's side: "try again later"."""
    url = f"http://127.0.0.1:{refusing_port}"
    async with running_bot(slack, powabase, tmp_path, POWABASE_URL=url) as bot:
        (answer,) = await reply(slack, bot, "D0DOWN")
    assert answer.startswith(":warning:") and TRY_LATER in answer


# --- our own settings refused: not set up correctly, the team has been told ----------------------


async def test_a_wrong_api_key_says_not_set_up_and_is_not_retried(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """A key Powabase refuses (a real 401 from the stand-in's gateway) is a setup problem."""
    async with running_bot(slack, powabase, tmp_path, POWABASE_API_KEY="pb-wrong-key") as bot:
        (answer,) = await reply(slack, bot, "D0BADKEY")
        alert = bot.alerts.blocked("powabase")
    assert NOT_SET_UP in answer and "contact the support team" in answer
    assert "401" not in answer and not powabase.runs  # refused at the gateway
    assert alert is not None and alert.reason == "http_401"


async def test_an_unknown_orchestration_says_not_set_up(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """An orchestration id Powabase does not know (a real 404) is a setup problem."""
    settings = {"POWABASE_ORCHESTRATION_ID": "orch_does_not_exist"}
    async with running_bot(slack, powabase, tmp_path, **settings) as bot:
        (answer,) = await reply(slack, bot, "D0NOORCH")
    assert NOT_SET_UP in answer


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_refused_run_says_not_set_up(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any, status: int
) -> None:
    """401 / 403 / 404 on the run: "not set up correctly", no retries, the operator alerted."""
    powabase.inject_run_fault("status", status=status, times=3)
    (answer,) = await reply(slack, bot, f"D0REFUSE{status}")
    assert answer.startswith(":warning:") and NOT_SET_UP in answer
    assert len(powabase.runs) == 1
    alert = bot.alerts.blocked("powabase")
    assert alert is not None and alert.reason == f"http_{status}"


async def test_an_early_not_found_error_event_says_not_set_up(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any
) -> None:
    """An unknown orchestration reported as an `error` event (HTTP 200) is a setup problem too."""
    powabase.inject_run_fault("early_error", body="Orchestration not found")
    (answer,) = await reply(slack, bot, "D0EARLY")
    assert NOT_SET_UP in answer and "Orchestration not found" not in answer
    alert = bot.alerts.blocked("powabase")
    assert alert is not None and alert.reason == "run_error_not_found"


# --- this request turned down --------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 422])
async def test_another_4xx_says_turned_down(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any, status: int
) -> None:
    """Any other 4xx refuses this request: "turned down", with what to try instead."""
    powabase.inject_run_fault("status", status=status, times=3)
    (answer,) = await reply(slack, bot, f"D0DOWN{status}")
    assert TURNED_DOWN in answer and "rephrasing" in answer
    assert len(powabase.runs) == 1
    assert bot.alerts.blocked("powabase") is None


# --- runs that end without a full answer ---------------------------------------------------------


@pytest.mark.parametrize("run_status", ["cancelled", "timeout", "something_new"])
async def test_a_complete_that_is_not_completed_is_a_notice_not_an_answer(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any, run_status: str
) -> None:
    """`complete` with a status other than completed keeps the partial text under a notice."""
    powabase.inject_run_fault("ended", after_deltas=3, run_status=run_status)
    replies = await reply(slack, bot, f"D0END{run_status[:4].upper()}")
    (answer,) = replies  # no delegation trace under an unfinished answer
    streamed = streamed_before_cut(powabase)
    assert streamed.split()[0] in answer
    assert ":warning: Something went wrong while the answer was being prepared." in answer
    assert PARTIAL in answer and "ask again" in answer


async def test_a_stall_longer_than_the_upstream_timeout_keeps_the_partial_text(
    slack: SlackStandin, powabase: PowabaseStandin, tmp_path: Path
) -> None:
    """Powabase going silent mid-answer (no keepalives) past the timeout: partial text + notice."""
    powabase.inject_run_fault("stall", after_deltas=3, delay=5.0)
    async with running_bot(slack, powabase, tmp_path, POWABOT_UPSTREAM_TIMEOUT=0.5) as bot:
        (answer,) = await reply(slack, bot, "D0STALL")
    assert streamed_before_cut(powabase).split()[0] in answer
    assert "took too long" in answer and TRY_LATER in answer and PARTIAL in answer


async def test_a_stream_dropped_mid_answer_keeps_the_partial_text(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any
) -> None:
    """The connection cut after some deltas: the text that arrived stays, with a notice."""
    powabase.inject_run_fault("drop", after_deltas=4)
    (answer,) = await reply(slack, bot, "D0DROP")
    assert streamed_before_cut(powabase).split()[0] in answer
    assert "The answer was cut off before it finished." in answer and PARTIAL in answer
    assert len(powabase.runs) == 1  # a run that had started is never asked twice


async def test_an_oversize_frame_ends_the_answer_and_the_bot_keeps_working(
    slack: SlackStandin, powabase: PowabaseStandin, bot: Any
) -> None:
    """One frame past the cap ends that answer with a notice; the next question is answered."""
    powabase.inject_run_fault("oversize_frame", after_deltas=2, frame_chars=2 * MAX_FRAME_CHARS)
    (answer,) = await reply(slack, bot, "D0HUGE")
    assert "The answer was cut off before it finished." in answer
    assert "xxxxxxxx" not in answer
    assert powabase.runs[-1].status == "cancelled"  # the bot hung up on the run
    (again, *_trace) = await reply(slack, bot, "D0HUGE", "How do I create an API key?")
    assert again == expected_text(powabase.runs[-1].answer)
