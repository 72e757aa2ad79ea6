"""`powabot provision` end to end: the CLI against the stand-in over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioning.cli import main
from provisioning.spec import DEFAULT_SPEC, REPO_ROOT
from sandbox.powabase import PowabaseStandin
from tests.provisioning.conftest import seed_files

Run = Callable[..., "asyncio.Future[int]"]
FAST = ["--poll-interval", "0.005", "--poll-timeout", "5"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, standin: PowabaseStandin) -> None:
    monkeypatch.setenv("POWABASE_URL", standin.url)
    monkeypatch.setenv("POWABASE_API_KEY", standin.api_key)


async def run_cli(*args: str | Path) -> int:
    """Run main() in a worker thread (it owns its event loop) while the stand-in keeps serving."""
    return await asyncio.to_thread(main, [str(a) for a in args])


def edited_spec(root: Path, old: str, new: str) -> Path:
    text = DEFAULT_SPEC.read_text(encoding="utf-8")
    assert old in text
    path = root / "spec.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


async def test_fresh_run_prints_plan_ids_and_settings_line(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run exits 0, prints what it did and the POWABASE_ORCHESTRATION_ID line to paste."""
    n = len(seed_files(seed_root))
    assert await run_cli("--root", seed_root, *FAST) == 0
    out, err = capsys.readouterr()
    (orch_id,) = standin.context.store.orchestrations
    assert out.splitlines()[-1] == f"POWABASE_ORCHESTRATION_ID={orch_id}"
    assert f"21 created, 0 updated, 0 unchanged; {n} file(s) uploaded" in out
    assert "  create  agent          billing-agent  (new)" in out
    assert f"[{n}/{n}] " in err and "extracted and attached" in err  # per-step lines, not a TTY


async def test_json_output_lists_ids_and_second_run_counts_zero(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--output json prints only JSON on stdout; the settings line goes to stderr."""
    assert await run_cli("--root", seed_root, "--output", "json", *FAST) == 0
    out, err = capsys.readouterr()
    first = json.loads(out)
    (orch_id,) = standin.context.store.orchestrations
    assert first["orchestration_id"] == orch_id
    assert set(first["knowledge_base_ids"]) == {"billing-kb", "technical-kb", "product-kb"}
    assert set(first["entity_ids"]) == {"billing-agent", "technical-agent", "product-agent"}
    assert sum(len(files) for files in first["source_ids"].values()) == len(seed_files(seed_root))
    assert f"POWABASE_ORCHESTRATION_ID={orch_id}" in err
    assert await run_cli("--root", seed_root, "--output", "json", *FAST) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["counts"] == {
        "created": 0,
        "updated": 0,
        "skipped": 21,
        "uploaded": 0,
        "reused": 0,
    }
    assert second["source_ids"] == first["source_ids"]


async def test_dry_run_prints_the_plan_and_writes_nothing(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run shows create/update/skip per resource and leaves Powabase untouched."""
    assert await run_cli("--root", seed_root, "--dry-run", *FAST) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan (dry run: nothing was changed):")
    assert "  create  source         billing-kb/refunds-faq.md" in out
    assert "POWABASE_ORCHESTRATION_ID" not in out
    assert not standin.context.store.knowledge_bases and not standin.counters["source_uploaded"]


async def test_failed_extraction_exits_1_naming_the_file(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source ending `failed` makes the exit code 1 and is named by path; the rest is done."""
    standin.force_extraction_status("refunds-faq.md", "failed", "scanned image, no text")
    assert await run_cli("--root", seed_root, *FAST) == 1
    out = capsys.readouterr().out
    assert "1 source(s) did not finish extraction:" in out
    assert (
        "  seed-content/billing/refunds-faq.md (billing-kb/refunds-faq.md): failed: "
        "scanned image, no text" in out
    )
    assert "POWABASE_ORCHESTRATION_ID=" in out and standin.counters["entity_created"] == 3


async def test_interrupted_run_exits_1_and_rerun_completes(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the 4th upload failing the command exits 1; running it again exits 0, no duplicates."""
    n = len(seed_files(seed_root))
    standin.inject_api_fault("POST", "/api/sources/upload", status=500, skip=3)
    assert await run_cli("--root", seed_root, *FAST) == 1
    assert "POST /api/sources/upload: HTTP 500" in capsys.readouterr().out
    assert await run_cli("--root", seed_root, *FAST) == 0
    assert "0 updated, 20 unchanged; 1 file(s) uploaded" in capsys.readouterr().out
    store = standin.context.store
    assert len(store.sources) == n and len(store.kb_sources) == n
    assert (len(store.knowledge_bases), len(store.agents), len(store.entities)) == (3, 3, 3)


async def test_orchestration_failure_exits_1_with_rerun_hint(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A failing non-source call stops the run with the call named and a re-run hint."""
    standin.inject_api_fault("POST", "/api/orchestrations", status=502)
    assert await run_cli("--root", seed_root, *FAST) == 1
    err = capsys.readouterr().err
    assert "error: POST /api/orchestrations: HTTP 502" in err and "re-run" in err
    assert await run_cli("--root", seed_root, *FAST) == 0
    assert len(standin.context.store.orchestrations) == 1


async def test_verify_reports_routing_accuracy(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--verify asks one question per specialist and reports expected vs actual."""
    assert await run_cli("--root", seed_root, "--verify", *FAST) == 0
    out = capsys.readouterr().out
    assert "routing accuracy: 3/3 (100%)" in out
    assert "ok   expected technical-agent  actual technical-agent" in out
    assert [run.delegated_to for run in standin.runs] == [
        "billing-agent",
        "technical-agent",
        "product-agent",
    ]


async def test_verify_all_asks_every_question(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--verify-all runs the whole eval file; its JSON carries the per-question routing."""
    total = (REPO_ROOT / "seed-content/eval.yaml").read_text().count("question:")
    assert await run_cli("--root", seed_root, "--verify-all", "--output", "json", *FAST) == 0
    report = json.loads(capsys.readouterr().out)["verify"]
    assert report["total"] == total == len(standin.runs)
    assert report["correct"] == total


async def test_verify_mismatch_exits_1(
    env: None, standin: PowabaseStandin, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A question routed to another specialist than expected is a MISS and exit code 1."""
    eval_file = seed_root / "wrong.yaml"
    eval_file.write_text("- {question: 'How do I get a refund?', expected: technical-agent}\n")
    assert await run_cli("--root", seed_root, "--verify", "--eval", eval_file, *FAST) == 1
    out = capsys.readouterr().out
    assert "MISS expected technical-agent  actual billing-agent" in out
    assert "routing accuracy: 0/1 (0%)" in out


async def test_rejected_api_key_exits_2(
    monkeypatch: pytest.MonkeyPatch,
    standin: PowabaseStandin,
    seed_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A 401 is a configuration error naming the call and POWABASE_API_KEY; nothing is written."""
    monkeypatch.setenv("POWABASE_URL", standin.url)
    monkeypatch.setenv("POWABASE_API_KEY", "wrong-key")
    assert await run_cli("--root", seed_root, *FAST) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "POWABASE_API_KEY" in err and "Invalid API key" in err
    assert "wrong-key" not in err
    assert not standin.counters


async def test_unreachable_url_exits_2(
    monkeypatch: pytest.MonkeyPatch, seed_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A URL nobody listens on is a configuration error saying Powabase cannot be reached."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("POWABASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("POWABASE_API_KEY", "key")
    assert await run_cli("--root", seed_root, *FAST) == 2
    err = capsys.readouterr().err
    assert "cannot reach Powabase: http://127.0.0.1:" in err and "ConnectError" in err


async def test_missing_settings_exit_2(seed_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without POWABASE_URL / POWABASE_API_KEY the command names both and exits 2."""
    assert await run_cli("--root", seed_root) == 2
    err = capsys.readouterr().err
    assert "POWABASE_URL is required" in err and "POWABASE_API_KEY is required" in err


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            lambda root: edited_spec(
                root, 'knowledge_base = "product-kb"', 'knowledge_base = "prod"'
            ),
            "spec.toml: agents[2].knowledge_base: unknown knowledge base 'prod'",
        ),
        (
            lambda root: edited_spec(root, 'strategy = "supervisor"', 'strategy = "boss"'),
            "spec.toml: orchestration.strategy: Input should be 'supervisor', 'sequential'",
        ),
        (
            lambda root: edited_spec(root, '"seed-content/technical"', '"seed-content/tech"'),
            "spec.toml: knowledge_bases[1].source_folder: seed-content/tech does not exist",
        ),
        (
            lambda root: (root / "seed-content/product/blank.md").touch() or DEFAULT_SPEC,
            "seed-content/product/blank.md: file is empty",
        ),
    ],
    ids=["unknown-kb", "validation", "missing-folder", "empty-file"],
)
async def test_bad_input_exits_2_naming_file_and_field(
    env: None,
    standin: PowabaseStandin,
    seed_root: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path], Path],
    expected: str,
) -> None:
    """Spec and file problems stop the command before any Powabase call, naming file and field."""
    spec_path = damage(seed_root)
    assert await run_cli("--spec", spec_path, "--root", seed_root, *FAST) == 2
    assert expected in capsys.readouterr().err
    assert not standin.counters


async def test_python_dash_m_provisioning_runs(
    env: None, standin: PowabaseStandin, seed_root: Path
) -> None:
    """`python -m provisioning` is the same command in its own process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "provisioning",
        "--root",
        str(seed_root),
        "--output",
        "json",
        *FAST,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()
    (orch_id,) = standin.context.store.orchestrations
    assert json.loads(out)["orchestration_id"] == orch_id
