"""`powabot` command line: run (production), demo (local stand-ins), provision, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

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
    sub.add_parser("doctor", help="check settings, the session store, Slack and Powabase")
    sub.add_parser(
        "provision", add_help=False, help="create the Powabase support team (see --help)"
    )
    return parser


async def _run_forever() -> int:
    from bot.logs import configure_logging
    from bot.settings import load_settings

    settings = load_settings("run")
    from bot.service import Powabot

    configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
    bot = Powabot(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await bot.start()
    try:
        await stop.wait()
    finally:
        await bot.stop()
    return 0


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
            from bot.demo import run_demo

            return asyncio.run(run_demo(interactive=args.interactive))
        if args.command == "doctor":
            from bot.doctor import run_doctor
            from bot.settings import load_settings

            code, lines = asyncio.run(run_doctor(load_settings()))
            print("\n".join(lines))
            return code
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
