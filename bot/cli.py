"""`powabot` command line: run (production), demo (local stand-ins), provision, doctor,
feedback export."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import entry_points

from bot.errors import ConfigError, PowabotError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powabot", description="Slack support bot for Powabase multi-agent orchestrations."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the bot against real Slack and Powabase (settings from env)")
    demo = sub.add_parser(
        "demo", help="play a short conversation against local Slack and Powabase stand-ins"
    )
    demo.add_argument("--interactive", action="store_true", help="type your own questions")
    doctor = sub.add_parser(
        "doctor", help="check Slack tokens and scopes, Powabase and the store; exit 1 on a failure"
    )
    doctor.add_argument(
        "--output", choices=("text", "json"), default="text", help="one line per check, or JSON"
    )
    sub.add_parser(
        "provision", add_help=False, help="create the Powabase support team (see --help)"
    )
    feedback = sub.add_parser("feedback", help="the ratings users gave the answers")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True)
    export = feedback_sub.add_parser(
        "export",
        help="every rating with its question, answer, specialists, sources and tokens",
        description="One row per rating; only the store settings (POWABOT_STORE, SUPABASE_*)"
        " are needed.",
    )
    export.add_argument(
        "--since", type=_since, metavar="YYYY-MM-DD", help="only ratings given on or after it (UTC)"
    )
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default: csv")
    export.add_argument(
        "--output", default="-", metavar="FILE", help="write to FILE instead of stdout"
    )
    return parser


def _since(text: str) -> datetime:
    from bot.export import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


STARTUP_STOP_GRACE = 1.5  # seconds to close what an interrupted or failed start-up opened


def _on_signal(sig: signal.Signals, stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT: stop gracefully. Second: exit at once, answers or not."""
    if stop.is_set():
        print(f"powabot: second {sig.name} during shutdown: exiting now", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(128 + sig.value)
    stop.set()


async def _run_forever() -> int:
    from bot.logs import configure_logging
    from bot.settings import load_settings

    settings = load_settings("run")
    from bot.service import Powabot

    configure_logging(settings)  # format, level, and the secret values to redact
    bot = Powabot(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, _on_signal, sig, stop)
    # Start-up may wait a long time (Slack or the store unreachable): a signal ends it at once.
    starting = asyncio.create_task(bot.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.wait({starting})
        await bot.stop(grace=STARTUP_STOP_GRACE)
        return 0
    if starting.cancelled() or starting.exception() is not None:
        stopping.cancel()
        await bot.stop(grace=STARTUP_STOP_GRACE)
        starting.result()  # raises: a refused token is one line from main()
    try:
        await stopping
    finally:
        await bot.stop()
    return 0


def _source_checkout_command(name: str) -> Callable[[list[str]], int] | None:
    """A command of the source checkout (entry point group `powabot.commands`), if installed.

    The product never imports these tools; the image does not contain them.
    """
    for entry in entry_points(group="powabot.commands", name=name):
        try:
            command: Callable[[list[str]], int] = entry.load()
        except ModuleNotFoundError as exc:  # the tool's package is absent, not broken
            if (exc.name or "").split(".")[0] == entry.module.split(".")[0]:
                return None
            raise
        return command
    return None


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["provision"]:
        from provisioning.cli import main as provision_main

        return provision_main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        if args.command == "run":
            return asyncio.run(_run_forever())
        if args.command == "demo":
            demo = _source_checkout_command("demo")
            if demo is None:
                print(
                    "powabot: `powabot demo` needs a source checkout installed with"
                    " `pip install -e .`: its local stand-ins are not part of this installation",
                    file=sys.stderr,
                )
                return EXIT_CONFIG
            return demo(["--interactive"] if args.interactive else [])
        if args.command == "doctor":
            from bot.doctor import main as doctor_main

            return doctor_main(args.output)
        if args.command == "feedback":
            from bot.export import main as export_main

            return export_main(since=args.since, fmt=args.format, output=args.output)
    except ConfigError as exc:
        print(f"powabot: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except PowabotError as exc:
        print(f"powabot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
