"""`powabot provision` goes through the operator's HTTP(S)_PROXY, as it did before it shared
the bot's Powabase client factory (the bot's own client ignores proxies)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from bot.powabase.client import make_http_client
from bot.settings import load_settings
from provisioning.cli import make_client


class RecordingProxy:
    """A forward proxy on 127.0.0.1 that answers every request itself with ``{}`` and records
    the request line (absolute-form: ``GET http://host/path HTTP/1.1``)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head.split(b"\r\n", 1)[0].decode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\nConnection: close\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy() as running:
        monkeypatch.setenv("HTTP_PROXY", running.url)
        monkeypatch.setenv("HTTPS_PROXY", running.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        yield running


async def test_provisioning_client_goes_through_the_configured_proxy(
    proxy: RecordingProxy,
) -> None:
    """With HTTP_PROXY set, provisioning's requests reach Powabase through that proxy."""
    settings = load_settings(
        _env_file=None, POWABASE_URL="http://powabase.invalid", POWABASE_API_KEY="pb-key"
    )
    async with make_client(settings) as client:
        response = await client.get("/v1/orchestrations")
    assert response.json() == {}
    assert proxy.requests == ["GET http://powabase.invalid/v1/orchestrations HTTP/1.1"]


async def test_the_bots_client_ignores_the_proxy(proxy: RecordingProxy) -> None:
    """The bot's own Powabase client keeps ignoring HTTP(S)_PROXY: it connects directly."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with make_http_client(closed, "pb-key") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/v1/orchestrations")
    assert proxy.requests == []
