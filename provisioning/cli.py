"""`powabot provision` / `python -m provisioning`: make Powabase match the spec, idempotently.

Exit codes: 0 everything provisioned (and verified, if asked); 1 some sources failed, a Powabase
call failed mid-run (re-run to finish) or verification found misrouted questions; 2 bad spec, bad
source files or bad settings (including an unreachable URL or a rejected API key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import httpx
import structlog

from bot.errors import ConfigError, ProvisioningError
from bot.powabase.client import make_http_client
from bot.settings import Settings, load_settings
from provisioning.api import PowabaseCallError
from provisioning.apply import provision
from provisioning.plan import format_plan
from provisioning.progress import make_progress
from provisioning.result import ProvisionResult
from provisioning.sources import collect_sources
from provisioning.spec import DEFAULT_SPEC, Spec, load_spec
from provisioning.verify import EvalItem, VerifyReport, load_eval, pick_questions, verify

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="powabot provision",
        description="Create or update the Powabase KBs, agents and orchestration of a spec.",
    )
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC, help="spec file (TOML)")
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="folder relative spec paths start from (default: the spec file's folder)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--output", choices=("text", "json"), default="text")
    check = parser.add_mutually_exclusive_group()
    check.add_argument("--verify", action="store_true", help="ask one eval question per domain")
    check.add_argument("--verify-all", action="store_true", help="ask every eval question")
    parser.add_argument("--eval", type=Path, default=None, help="eval file (default: the spec's)")
    parser.add_argument("--poll-interval", type=float, default=2.0, metavar="SECONDS")
    parser.add_argument("--poll-timeout", type=float, default=120.0, metavar="SECONDS")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit code (never raises for expected failures)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse has already printed usage / help
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    with _logs_off_stdout():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        spec = load_spec(args.spec, root=args.root)
        collect_sources(spec)  # bad files stop us before any call
        questions = _questions(args, spec)
        settings = load_settings().require("provision")
    except (ConfigError, ProvisioningError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return asyncio.run(_run(args, spec, settings, questions))
    except PowabaseCallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.is_config_problem:
            return EXIT_CONFIG
        print("Nothing is lost: re-run the command to finish.", file=sys.stderr)
        return EXIT_FAILED
    except ProvisioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


@contextmanager
def _logs_off_stdout() -> Iterator[None]:
    """Unless the host (the bot CLI) configured structlog, route its warnings through stdlib
    logging (stderr) for the duration of the command, so stdout stays clean for the output."""
    if structlog.is_configured():
        yield
        return
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory())
    try:
        yield
    finally:
        structlog.reset_defaults()


def _questions(args: argparse.Namespace, spec: Spec) -> list[EvalItem]:
    if not (args.verify or args.verify_all):
        return []
    path = args.eval or (spec.resolve(spec.eval_file) if spec.eval_file else None)
    if path is None:
        raise ProvisioningError(f"{spec.path}: eval_file: not set (or pass --eval) for --verify")
    return pick_questions(load_eval(path), every=args.verify_all)


def make_client(settings: Settings) -> httpx.AsyncClient:
    """The one client for every call of a run: the bot's Powabase httpx client (base URL, both
    auth headers), waiting up to two minutes for an answer."""
    assert settings.POWABASE_API_KEY is not None
    key = settings.POWABASE_API_KEY.get_secret_value()
    return make_http_client(settings.powabase_url, key, idle_timeout=120.0, trust_env=True)


async def _run(
    args: argparse.Namespace, spec: Spec, settings: Settings, questions: list[EvalItem]
) -> int:
    async with make_client(settings) as client:
        result = await provision(
            client,
            spec,
            dry_run=args.dry_run,
            progress=make_progress(sys.stderr),
            poll_interval=args.poll_interval,
            poll_timeout=args.poll_timeout,
            concurrency=args.concurrency,
        )
        report = None
        if questions and result.orchestration_id:
            report = await verify(client, result.orchestration_id, questions)
    if args.output == "json":
        payload: dict[str, Any] = {**result.to_json(), "verify": report and report.to_json()}
        print(json.dumps(payload, indent=2))
        _env_line(result, sys.stderr)
    else:
        print_text(result, report, questions_asked=bool(questions), out=sys.stdout)
    failed = bool(result.failed_sources) or (report is not None and not report.ok)
    return EXIT_FAILED if failed else EXIT_OK


def print_text(
    result: ProvisionResult, report: VerifyReport | None, *, questions_asked: bool, out: TextIO
) -> None:
    """The human summary: plan/actions, counts, failures, warnings, verification, env line."""
    heading = "Plan (dry run: nothing was changed)" if result.dry_run else "Done"
    print(f"{heading}:", file=out)
    print(format_plan(result.actions), file=out)
    would = "would be " if result.dry_run else ""
    print(
        f"{result.created} {would}created, {result.updated} {would}updated, "
        f"{result.skipped} unchanged; {result.uploaded} file(s) uploaded, "
        f"{result.reused} already on Powabase",
        file=out,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=out)
    if result.failed_sources:
        print(f"{len(result.failed_sources)} source(s) did not finish extraction:", file=out)
        for failure in result.failed_sources:
            print(f"  {failure.describe()}", file=out)
    if report is not None:
        print("Routing check:", file=out)
        for line in report.lines():
            print(line, file=out)
    elif questions_asked:
        print("Routing check skipped: the orchestration does not exist yet.", file=out)
    _env_line(result, out)


def _env_line(result: ProvisionResult, out: TextIO) -> None:
    if result.orchestration_id:
        print(f"POWABASE_ORCHESTRATION_ID={result.orchestration_id}", file=out)
