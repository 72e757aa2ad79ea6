"""The image's HEALTHCHECK, run as Docker would run it (`/bin/sh -c`) against a local server on
PORT, and the build stage holding what the packaged seed content links to (no Docker engine)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.unit.test_image import REPO, _copied_sources, _stages


def healthcheck_command() -> str:
    """The shell-form command of the final stage's HEALTHCHECK."""
    (check,) = _stages()[-1].args("HEALTHCHECK")
    options, separator, command = check.partition(" CMD ")
    assert separator, f"HEALTHCHECK without CMD: {check}"
    assert "--interval=" in options and "--timeout=" in options
    return command.strip()


async def run_healthcheck(port: int) -> int:
    """Exit status of the HEALTHCHECK command with PORT set; `python` is this interpreter."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PORT"] = str(port)
    env["HTTP_PROXY"] = env["http_proxy"] = "http://127.0.0.1:9"  # must not be used
    process = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        healthcheck_command(),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, dict[str, int]]]:
    """A server on a free port answering /healthz with the status in `state["status"]`."""
    state = {"status": 200}

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(status=state["status"], text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield int(runner.addresses[0][1]), state
    finally:
        await runner.cleanup()


async def test_healthcheck_passes_while_healthz_answers_200(
    health_server: tuple[int, dict[str, int]],
) -> None:
    """Docker marks the container healthy when /healthz on PORT answers 200, proxies set or not."""
    port, _ = health_server
    assert await run_healthcheck(port) == 0


async def test_healthcheck_fails_on_an_error_status_or_no_answer(
    health_server: tuple[int, dict[str, int]],
) -> None:
    """A 5xx from /healthz, or nothing listening on PORT, makes the check fail."""
    port, state = health_server
    state["status"] = 503
    assert await run_healthcheck(port) != 0
    assert await run_healthcheck(_closed_port()) != 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_build_stage_copies_what_package_links_point_at() -> None:
    """Every link inside the build stage's sources (provisioning/seed-content) resolves inside
    what the stage copies, so the wheel built in the image holds the seed content."""
    build = next(s for s in _stages() if any("wheel" in r for r in s.args("RUN")))
    copied = [REPO / source for source in _copied_sources(build)]
    links = [p for root in copied if root.is_dir() for p in root.rglob("*") if p.is_symlink()]
    assert REPO / "provisioning" / "seed-content" in links
    for link in links:
        target = link.resolve()
        assert any(target.is_relative_to(root.resolve()) for root in copied), (link, target)
