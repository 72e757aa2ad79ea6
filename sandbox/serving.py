"""What every stand-in shares: its aiohttp app served on 127.0.0.1 at a free port, and
`async with standin:` around `start()` / `stop()`."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from aiohttp import web


class LoopbackServer:
    """Base of the stand-ins. A subclass builds its app in `start()` and hands it to `serve()`;
    its `stop()` calls `close_server()` along with its own clean-up."""

    _runner: web.AppRunner | None = None

    async def serve(self, app: web.Application, **runner_options: Any) -> int:
        """Serve `app` on 127.0.0.1 at a port the OS picks; return that port."""
        self._runner = web.AppRunner(app, access_log=None, **runner_options)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    async def close_server(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
