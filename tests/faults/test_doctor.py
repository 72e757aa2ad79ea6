"""`powabot doctor` against the Slack and Powabase stand-ins over real sockets: every check is
listed, each failure names its check and a one-line fix, and the exit code says whether any
failed. The store's checks are in tests/store/test_store_doctor.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.cli import main
from bot.doctor import run_doctor
from bot.settings import load_settings
from sandbox.slack.server import INSTALLED_BOT_SCOPES

# Every check, in the order doctor prints them (text labels).
LABELS = (
    "bot token",
    "scopes",
    "app token",
    "signing secret",
    "Powabase",
    "API key",
    "orchestration",
    "store",
    "migrations",
    "budget table",
)


def _env(slack: Any, powabase: Any, tmp_path: Path, **extra: str | None) -> dict[str, str]:
    env: dict[str, str | None] = {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_APP_TOKEN": slack.app_token,
        "SLACK_API_URL": slack.api_url,
        "POWABASE_URL": powabase.url,
        "POWABASE_API_KEY": powabase.api_key,
        "POWABASE_ORCHESTRATION_ID": powabase.orchestration_id,
        "POWABOT_STORE": f"sqlite:///{tmp_path / 'sessions.db'}",
        **extra,
    }
    return {k: v for k, v in env.items() if v is not None}


async def doctor(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *args: str,
) -> tuple[int, str]:
    """`powabot doctor ARGS` with exactly `env` set, run in a thread (the stand-ins serve on this
    loop; the command runs its own): its exit code and stdout."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["doctor", *args])
    return code, capsys.readouterr().out


def line_of(out: str, label: str) -> str:
    """The one output line of the check labelled `label`."""
    found = [line for line in out.splitlines() if line[2:].startswith(f"{label}: ")]
    assert len(found) == 1, f"{label!r} in {out!r}"
    return found[0]


@dataclass
class Doctor:
    """`powabot doctor` wired to this test's stand-ins: `env(**changes)` builds its environment,
    `run(env, *args)` runs it (exit code and stdout)."""

    slack: Any
    powabase: Any
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def env(self, **extra: str | None) -> dict[str, str]:
        return _env(self.slack, self.powabase, self.tmp_path, **extra)

    async def run(self, env: dict[str, str], *args: str) -> tuple[int, str]:
        return await doctor(self.monkeypatch, self.capsys, env, *args)


@pytest.fixture
def d(
    slack: Any,
    powabase: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Doctor:
    return Doctor(slack, powabase, tmp_path, monkeypatch, capsys)


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no developer's .env is read


async def test_all_green_lists_every_check_and_exits_0(d: Doctor) -> None:
    """A working Socket Mode deployment: every check is listed, passed or not applicable, exit 0."""
    code, out = await d.run(d.env())
    assert code == 0, out
    lines = out.splitlines()
    assert [line[2:].split(":")[0] for line in lines[:-1]] == list(LABELS)
    assert line_of(out, "bot token") == "✓ bot token: powabot (UBOT) in Stand-in Workspace (T0TEAM)"
    assert line_of(out, "scopes").startswith(f"✓ scopes: all {len(INSTALLED_BOT_SCOPES)} granted")
    assert line_of(out, "app token").startswith("✓ app token: Socket Mode")
    assert line_of(out, "signing secret") == "– signing secret: not used in Socket Mode"
    assert line_of(out, "orchestration").endswith(" with 3 entities")
    assert line_of(out, "budget table") == (
        "– budget table: not applicable (SQLite: in-process budget)"
    )
    assert lines[-1].startswith("all good: 8 passed, 0 failed")
    for secret in (d.slack.bot_token, d.slack.app_token, d.powabase.api_key):
        assert secret not in out


async def test_bad_bot_token_fails_naming_the_check_and_its_fix(d: Doctor) -> None:
    """A bot token Slack refuses: exit 1, the bot token line says why and how to fix it, the
    other checks still run."""
    env = d.env(SLACK_BOT_TOKEN="xoxb-not-the-right-token")
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "bot token") == (
        "✗ bot token: Slack says invalid_auth — set SLACK_BOT_TOKEN to the app's Bot User OAuth"
        " Token (xoxb-…) from OAuth & Permissions (reinstall the app if it was revoked)"
    )
    assert line_of(out, "scopes").startswith("– scopes: not checked")
    assert line_of(out, "app token").startswith("✓ ")
    assert line_of(out, "orchestration").startswith("✓ ")
    assert "xoxb-not-the-right-token" not in out


async def test_revoked_bot_token_is_reported_as_slack_says(d: Doctor) -> None:
    """Slack's own refusal code (token_revoked) is what the bot token line shows."""
    d.slack.inject("auth.test", error="token_revoked")
    code, out = await d.run(d.env())
    assert code == 1
    assert line_of(out, "bot token").startswith("✗ bot token: Slack says token_revoked — set")


async def test_missing_scope_is_named(d: Doctor) -> None:
    """An app installed without files:write: the scopes check fails naming it and the fix."""
    d.slack.granted_scopes = tuple(s for s in INSTALLED_BOT_SCOPES if s != "files:write")
    code, out = await d.run(d.env())
    assert code == 1
    assert line_of(out, "scopes") == (
        "✗ scopes: missing files:write — add it under OAuth & Permissions → Bot Token Scopes"
        " and reinstall the app (or recreate it from deploy/slack-app-manifest.yaml)"
    )
    assert line_of(out, "bot token").startswith("✓ ")


async def test_extra_scopes_pass_but_are_named(d: Doctor) -> None:
    """Scopes granted beyond what powabot needs do not fail doctor, but are listed."""
    d.slack.granted_scopes = (*INSTALLED_BOT_SCOPES, "reactions:write")
    code, out = await d.run(d.env())
    assert code == 0
    assert line_of(out, "scopes").endswith("; also granted, not needed: reactions:write")


async def test_bad_app_token_fails_in_socket_mode(d: Doctor) -> None:
    """An app token Slack refuses fails the app token check with its fix; the bot token passes."""
    env = d.env(SLACK_APP_TOKEN="xapp-not-the-right-token")
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "app token").startswith(
        "✗ app token: Slack says invalid_auth — set SLACK_APP_TOKEN to an app-level token (xapp-…)"
    )
    assert line_of(out, "bot token").startswith("✓ ")


async def test_bot_token_given_as_app_token_fails(d: Doctor) -> None:
    """The xoxb token pasted into SLACK_APP_TOKEN: Slack's not_allowed_token_type is shown."""
    env = d.env(SLACK_APP_TOKEN=d.slack.bot_token)
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "app token").startswith("✗ app token: Slack says not_allowed_token_type")


async def test_http_mode_without_signing_secret_fails_as_a_check(d: Doctor) -> None:
    """HTTP mode (no app token) without a signing secret is a failed check (exit 1, not 2)."""
    env = d.env()
    del env["SLACK_APP_TOKEN"]
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "signing secret").startswith(
        "✗ signing secret: HTTP mode (SLACK_APP_TOKEN not set) needs SLACK_SIGNING_SECRET"
    )
    assert "set SLACK_SIGNING_SECRET to the app's Signing Secret" in out
    assert line_of(out, "app token") == (
        "– app token: not used in HTTP mode (SLACK_APP_TOKEN not set)"
    )


async def test_http_mode_with_signing_secret_passes(d: Doctor) -> None:
    """HTTP mode with a signing secret passes, and points at the HTTP-mode manifest."""
    env = d.env(SLACK_SIGNING_SECRET="0123456789abcdef0123456789abcdef")
    del env["SLACK_APP_TOKEN"]
    code, out = await d.run(env)
    assert code == 0, out
    assert line_of(out, "signing secret").startswith("✓ signing secret: set")
    assert "0123456789abcdef" not in out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_powabase_is_named(d: Doctor) -> None:
    """Nothing listening at POWABASE_URL: the Powabase check fails; key and orchestration are
    not checked; Slack and the store still are."""
    url = f"http://127.0.0.1:{_closed_port()}"
    code, out = await d.run(d.env(POWABASE_URL=url))
    assert code == 1
    assert line_of(out, "Powabase").startswith(f"✗ Powabase: cannot reach {url}: ConnectError")
    assert "— check POWABASE_URL" in line_of(out, "Powabase")
    assert line_of(out, "API key") == "– API key: not checked: Powabase unreachable"
    assert line_of(out, "orchestration") == "– orchestration: not checked: Powabase unreachable"
    assert line_of(out, "bot token").startswith("✓ ")
    assert line_of(out, "store").startswith("✓ ")


async def test_wrong_api_key_is_named(d: Doctor) -> None:
    """A key Powabase refuses (401): the API key check fails with Powabase's words and the fix."""
    env = d.env(POWABASE_API_KEY="pb-wrong-key-0123456789")
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "Powabase").startswith("✓ Powabase: answering at ")
    assert line_of(out, "API key") == (
        "✗ API key: Powabase refused it (HTTP 401: Invalid API key) — set POWABASE_API_KEY to"
        " the Powabase project's service-role key (the key `powabot provision` used)"
    )
    assert line_of(out, "orchestration").startswith("– orchestration: not checked")
    assert "pb-wrong-key-0123456789" not in out


async def test_unknown_orchestration_is_named(d: Doctor) -> None:
    """An orchestration id Powabase does not know (404): the orchestration check fails."""
    env = d.env(POWABASE_ORCHESTRATION_ID="orch-that-is-not-there")
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "API key") == "✓ API key: accepted"
    assert line_of(out, "orchestration").startswith(
        "✗ orchestration: orch-that-is-not-there not found (HTTP 404"
    )
    assert "set POWABASE_ORCHESTRATION_ID to the id `powabot provision` prints" in out


async def test_orchestration_without_entities_is_named(d: Doctor) -> None:
    """An orchestration with no agents in it fails: no agent would answer."""
    headers = {"apikey": d.powabase.api_key, "Authorization": f"Bearer {d.powabase.api_key}"}
    async with httpx.AsyncClient(base_url=d.powabase.url, headers=headers) as http:
        created = await http.post("/api/orchestrations", json={"name": "Empty Team"})
        created.raise_for_status()
    orch_id = created.json()["id"]
    env = d.env(POWABASE_ORCHESTRATION_ID=orch_id)
    code, out = await d.run(env)
    assert code == 1
    assert line_of(out, "orchestration") == (
        f"✗ orchestration: Empty Team ({orch_id}) has no entities: no agent would answer"
        " — run `powabot provision` to add the support team's agents to it"
    )


async def test_nothing_configured_names_every_missing_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no settings at all, doctor still runs every check and names each missing variable."""
    env = {"POWABOT_STORE": f"sqlite:///{tmp_path / 'b.db'}"}
    code, out = await doctor(monkeypatch, capsys, env)
    assert code == 1
    assert line_of(out, "bot token").startswith("✗ bot token: SLACK_BOT_TOKEN is not set — ")
    assert line_of(out, "Powabase").startswith("✗ Powabase: POWABASE_URL is not set — ")
    assert line_of(out, "API key").startswith("✗ API key: POWABASE_API_KEY is not set — ")
    assert line_of(out, "orchestration").startswith(
        "✗ orchestration: POWABASE_ORCHESTRATION_ID is not set — "
    )
    assert line_of(out, "store").startswith("✓ store: sqlite at ")


async def test_json_output_has_the_same_verdicts(d: Doctor) -> None:
    """`--output json` is one JSON document with every check and the verdicts the text shows."""
    env = d.env(POWABASE_API_KEY="pb-wrong-key-0123456789")
    text_code, text = await d.run(env)
    json_code, out = await d.run(env, "--output", "json")
    report = json.loads(out)
    assert json_code == text_code == report["exit_code"] == 1
    assert report["ok"] is False and report["mode"] == "socket"
    marks = {"ok": "✓", "failed": "✗", "skipped": "–"}
    assert [f"{marks[c['status']]} {c['label']}" for c in report["checks"]] == [
        line_of(text, label)[: 2 + len(label)] for label in LABELS
    ]
    key = next(c for c in report["checks"] if c["name"] == "powabase_api_key")
    assert key["status"] == "failed" and key["fix"].startswith("set POWABASE_API_KEY")
    assert "pb-wrong-key-0123456789" not in out


async def test_config_error_exits_2_with_json_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings that cannot be read exit 2; with `--output json` stdout still holds JSON."""
    env = {"SUPABASE_URL": "http://127.0.0.1:1"}  # without its service-role key
    code, out = await doctor(monkeypatch, capsys, env, "--output", "json")
    assert code == 2
    report = json.loads(out)
    assert report["exit_code"] == 2 and report["ok"] is False
    assert any("SUPABASE_SERVICE_ROLE_KEY" in p for p in report["configuration_errors"])


async def test_powabase_error_page_echoing_the_key_is_scrubbed(
    slack: Any, powabase: Any, tmp_path: Path
) -> None:
    """A Powabase error body that repeats the API key never gets the key into doctor's report."""
    powabase.inject_api_fault(
        "GET",
        "/api/orchestrations/*",
        status=500,
        body={"error": f"upstream rejected apikey={powabase.api_key} for this project"},
    )
    settings = load_settings(_env_file=None, **_env(slack, powabase, tmp_path))
    report = await run_doctor(settings)
    assert report.exit_code == 1
    check = report.check("powabase_reachable")
    assert check.status == "failed" and "HTTP 500" in check.detail
    assert powabase.api_key not in "\n".join(report.lines())
    assert "[redacted]" in check.detail


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A host that accepts connections and never answers: http://127.0.0.1:PORT."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_silent_host_does_not_hang_doctor() -> None:
    """Slack, Powabase and a Postgres that accept but never answer fail their checks within the
    step limit instead of hanging doctor."""
    async with silent_server() as url:
        settings = load_settings(
            _env_file=None,
            SLACK_BOT_TOKEN="xoxb-standin-token",
            SLACK_APP_TOKEN="xapp-standin-token",
            SLACK_API_URL=f"{url}/api/",
            POWABASE_URL=url,
            POWABASE_API_KEY="pb-standin-key",
            POWABASE_ORCHESTRATION_ID="orch",
            POWABOT_STORE=f"postgresql://bot:pw-of-the-bot@{url.removeprefix('http://')}/db",
        )
        started = time.monotonic()
        report = await run_doctor(settings, step_seconds=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0
    assert report.exit_code == 1
    assert report.check("slack_bot_token").detail == f"Slack at {url}/api/ did not answer auth.test"
    assert report.check("slack_app_token").status == "failed"
    assert report.check("powabase_reachable").detail == (
        f"cannot reach {url}: no answer within the time limit"
    )
    assert report.check("store_reachable").detail.endswith(
        "unreachable: no answer within the time limit"
    )
    assert "pw-of-the-bot" not in "\n".join(report.lines())


async def test_oauth_install_needs_no_bot_token(d: Doctor) -> None:
    """With the OAuth install settings (several workspaces), a missing SLACK_BOT_TOKEN is not
    a failure: each workspace's token comes from its install."""
    env = d.env(
        SLACK_BOT_TOKEN=None,
        SLACK_APP_TOKEN=None,
        SLACK_SIGNING_SECRET="signing-secret-of-the-app",
        SLACK_CLIENT_ID="1234.5678",
        SLACK_CLIENT_SECRET="client-secret-of-the-app",
        SLACK_STATE_SECRET="a-state-secret-of-at-least-32-characters",
    )
    code, out = await d.run(env)
    assert line_of(out, "bot token").startswith("✓ bot token: OAuth install")
    assert line_of(out, "scopes").startswith("– scopes: not checked")
    assert "SLACK_BOT_TOKEN is not set" not in out
    assert code == 0, out
