"""`provision()` against the Powabase stand-in over real sockets: idempotency and recovery."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bot.errors import ProvisioningError
from provisioning import ProvisionResult, provision
from provisioning.plan import Kind, Verb
from provisioning.spec import DEFAULT_SPEC, Spec, load_spec
from sandbox.powabase import PowabaseStandin
from tests.provisioning.conftest import seed_files

WRITES = (
    "kb_created",
    "kb_updated",
    "source_uploaded",
    "source_attached",
    "source_detached",
    "agent_created",
    "agent_updated",
    "agent_kb_assigned",
    "orchestration_created",
    "orchestration_updated",
    "entity_created",
    "entity_updated",
)
FAST = {"poll_interval": 0.005, "poll_timeout": 5.0}


def writes(standin: PowabaseStandin) -> dict[str, int]:
    return {name: standin.counters[name] for name in WRITES if standin.counters[name]}


def attached_files(standin: PowabaseStandin) -> dict[str, list[str]]:
    """KB name → sorted file names of its attached sources, read from the stand-in's store."""
    store = standin.context.store
    out: dict[str, list[str]] = {}
    for kb in store.knowledge_bases.values():
        ids = [
            link.source_id for link in store.kb_sources.values() if link.knowledge_base_id == kb.id
        ]
        out[kb.name] = sorted(store.sources[i].name for i in ids)
    return out


def expected_files(root: Path) -> dict[str, list[str]]:
    return {
        f"{domain}-kb": sorted(p.name for p in (root / "seed-content" / domain).iterdir())
        for domain in ("billing", "technical", "product")
    }


def assert_complete(standin: PowabaseStandin, root: Path, result: ProvisionResult) -> None:
    """Exactly one of everything, every file attached to its KB, the ids reported."""
    store = standin.context.store
    assert sorted(kb.name for kb in store.knowledge_bases.values()) == [
        "billing-kb",
        "product-kb",
        "technical-kb",
    ]
    assert sorted(a.name for a in store.agents.values()) == [
        "billing-agent",
        "product-agent",
        "technical-agent",
    ]
    assert len(store.orchestrations) == 1 and len(store.entities) == 3
    assert len(store.agent_kbs) == 3
    assert attached_files(standin) == expected_files(root)
    (orch,) = store.orchestrations.values()
    assert result.orchestration_id == orch.id
    assert result.ok


async def test_fresh_provision_creates_everything_once(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A fresh run creates 3 KBs, one source per file, 3 agents, 1 orchestration, 3 entities."""
    n = len(seed_files(seed_root))
    result = await provision(client, spec, **FAST)
    assert writes(standin) == {
        "kb_created": 3,
        "source_uploaded": n,
        "source_attached": n,
        "agent_created": 3,
        "agent_kb_assigned": 3,
        "orchestration_created": 1,
        "entity_created": 3,
    }
    assert_complete(standin, seed_root, result)
    assert (result.uploaded, result.updated, result.skipped) == (n, 0, 0)
    assert set(result.agent_ids) == {"billing-agent", "technical-agent", "product-agent"}
    store = standin.context.store
    billing = store.agents[result.agent_ids["billing-agent"]]
    assert billing.model == "gpt-5.4-mini" and "knowledge base" in billing.system_prompt
    (orch,) = store.orchestrations.values()
    assert orch.strategy == "supervisor"
    assert orch.orchestrator_config["additional_instructions"].startswith("Delegate")
    source = next(iter(store.sources.values()))
    assert source.metadata["sha256"] == source.content_hash


async def test_second_run_creates_and_uploads_nothing(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """Re-running against the same Powabase writes nothing at all."""
    first = await provision(client, spec, **FAST)
    before = writes(standin)
    second = await provision(client, spec, **FAST)
    assert writes(standin) == before
    assert (second.created, second.updated, second.uploaded, second.reused) == (0, 0, 0, 0)
    assert second.skipped == len(second.actions)
    assert second.orchestration_id == first.orchestration_id
    assert second.source_ids == first.source_ids


async def test_changed_file_is_reuploaded_once_and_old_version_detached(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """Editing one seed file re-uploads only that file and swaps it in its KB."""
    await provision(client, spec, **FAST)
    before = dict(standin.counters)
    changed = seed_files(seed_root)[0]
    changed.write_text(changed.read_text() + "\n## New section\n\nFresh words.\n")
    result = await provision(client, spec, **FAST)
    delta = {k: standin.counters[k] - before.get(k, 0) for k in WRITES}
    assert {k: v for k, v in delta.items() if v} == {
        "source_uploaded": 1,
        "source_attached": 1,
        "source_detached": 1,
    }
    assert result.uploaded == 1 and result.updated == 1 and result.created == 0
    assert attached_files(standin) == expected_files(seed_root)
    store = standin.context.store
    kb_id = result.knowledge_base_ids[f"{changed.parent.name}-kb"]
    new_id = result.source_ids[f"{changed.parent.name}-kb"][changed.name]
    assert "Fresh words." in store.sources[new_id].text
    assert new_id in {
        link.source_id for link in store.kb_sources.values() if link.knowledge_base_id == kb_id
    }
    third = await provision(client, spec, **FAST)
    assert (third.created, third.updated, third.uploaded) == (0, 0, 0)


async def test_changed_prompt_and_role_are_updated_in_place(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A new system prompt or role description updates the existing agent and entity."""
    first = await provision(client, spec, **FAST)
    text = DEFAULT_SPEC.read_text(encoding="utf-8")
    text = text.replace("You are the billing specialist", "You are the senior billing specialist")
    text = text.replace("Product specialist. Questions", "Product specialist. All questions")
    edited = seed_root / "edited.toml"
    edited.write_text(text, encoding="utf-8")
    before = dict(standin.counters)
    result = await provision(client, load_spec(edited, root=seed_root), **FAST)
    delta = {k: standin.counters[k] - before.get(k, 0) for k in WRITES}
    assert {k: v for k, v in delta.items() if v} == {"agent_updated": 1, "entity_updated": 1}
    store = standin.context.store
    agent = store.agents[first.agent_ids["billing-agent"]]
    assert agent.system_prompt.startswith("You are the senior billing specialist")
    entity = store.entities[first.entity_ids["product-agent"]]
    assert entity.role_description.startswith("Product specialist. All questions")
    assert result.updated == 2 and result.entity_ids == first.entity_ids


async def test_upload_failure_is_reported_and_rerun_finishes_without_duplicates(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """When the 4th upload fails, the rest is done; a re-run uploads just the missing file."""
    n = len(seed_files(seed_root))
    standin.inject_api_fault("POST", "/api/sources/upload", status=500, skip=3)
    first = await provision(client, spec, **FAST)
    (failed,) = first.failed_sources
    assert failed.status == "error" and "POST /api/sources/upload: HTTP 500" in failed.message
    assert failed.path == f"seed-content/{failed.knowledge_base.removesuffix('-kb')}/{failed.file}"
    assert first.orchestration_id is not None and len(first.entity_ids) == 3
    second = await provision(client, spec, **FAST)
    assert second.uploaded == 1 and second.created == 1 and second.ok
    assert standin.counters["source_uploaded"] == n
    assert len(standin.context.store.sources) == n
    assert_complete(standin, seed_root, second)


async def test_failed_agent_call_stops_the_run_and_rerun_completes(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A Powabase error outside the sources aborts with the call named; a re-run completes."""
    standin.inject_api_fault("POST", "/api/agents", status=503, skip=1)
    with pytest.raises(ProvisioningError, match="POST /api/agents: HTTP 503"):
        await provision(client, spec, **FAST)
    assert len(standin.context.store.agents) == 1
    result = await provision(client, spec, **FAST)
    assert standin.counters["agent_created"] == 3 and standin.counters["kb_created"] == 3
    assert result.uploaded == 0
    assert_complete(standin, seed_root, result)


async def test_killed_run_is_finished_by_the_next_one(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A run cancelled while waiting for extraction leaves nothing a re-run duplicates."""
    n = len(seed_files(seed_root))
    task = asyncio.create_task(provision(client, spec, poll_interval=30.0, concurrency=n))
    deadline = asyncio.get_running_loop().time() + 5
    while standin.counters["source_uploaded"] < n:
        assert asyncio.get_running_loop().time() < deadline, "uploads did not happen"
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert standin.counters["source_attached"] == 0 and not standin.context.store.agents
    result = await provision(client, spec, **FAST)
    assert (result.uploaded, result.reused) == (0, n)
    assert standin.counters["source_uploaded"] == n and len(standin.context.store.sources) == n
    assert_complete(standin, seed_root, result)


@pytest.mark.parametrize("status", ["failed", "attention_required", "cancelled"])
async def test_bad_extraction_is_reported_by_file_and_everything_else_is_done(
    standin: PowabaseStandin,
    client: httpx.AsyncClient,
    spec: Spec,
    seed_root: Path,
    status: str,
) -> None:
    """A source ending in a bad terminal status is named; KBs, agents and orchestration exist."""
    victim = seed_files(seed_root)[1]
    standin.force_extraction_status(victim.name, status, "could not read the table")
    result = await provision(client, spec, **FAST)
    (failed,) = result.failed_sources
    assert (failed.file, failed.status, failed.message) == (
        victim.name,
        status,
        "could not read the table",
    )
    assert failed.path == victim.relative_to(seed_root).as_posix()
    assert victim.name not in result.source_ids[failed.knowledge_base]
    assert not result.ok and result.orchestration_id is not None
    assert standin.counters["entity_created"] == 3


async def test_source_stuck_in_extraction_times_out(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A source that never reaches a terminal status fails with 'timeout' after poll_timeout."""
    victim = seed_files(seed_root)[0]
    standin.force_extraction_status(victim.name, "extracting")
    result = await provision(client, spec, poll_interval=0.005, poll_timeout=0.1)
    (failed,) = result.failed_sources
    assert failed.file == victim.name and failed.status == "timeout"
    assert "'extracting'" in failed.message


async def test_dry_run_changes_nothing(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """Dry runs only read: on an empty Powabase they plan creates, later only the real diff."""
    n = len(seed_files(seed_root))
    planned = await provision(client, spec, dry_run=True, **FAST)
    assert writes(standin) == {}
    assert {a.verb for a in planned.actions} == {Verb.CREATE}
    assert planned.created == len(planned.actions) == 3 + n + 3 + 3 + 1 + 3
    assert planned.orchestration_id is None
    await provision(client, spec, **FAST)
    before = writes(standin)
    changed = seed_files(seed_root)[-1]
    changed.write_text("# Replaced\n\nAll new.\n")
    planned = await provision(client, spec, dry_run=True, **FAST)
    assert writes(standin) == before
    diff = [(a.kind, a.verb, a.name) for a in planned.actions if a.verb is not Verb.SKIP]
    assert diff == [(Kind.SOURCE, Verb.UPDATE, f"{changed.parent.name}-kb/{changed.name}")]


async def test_content_already_on_powabase_is_reused_not_uploaded(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A 409 duplicate_source is answered by attaching the existing source."""
    file = seed_files(seed_root)[0]
    response = await client.post(
        "/api/sources/upload", files={"file": (file.name, file.read_bytes(), "text/markdown")}
    )
    assert response.status_code == 201
    existing = response.json()["id"]
    result = await provision(client, spec, **FAST)
    assert result.reused == 1
    assert result.source_ids[f"{file.parent.name}-kb"][file.name] == existing
    assert len(standin.context.store.sources) == len(seed_files(seed_root))


async def test_config_error_mid_uploads_cancels_the_other_uploads(
    standin: PowabaseStandin, client: httpx.AsyncClient, spec: Spec, seed_root: Path
) -> None:
    """A 401 during uploads aborts the run at once and leaves no upload task running."""
    standin.inject_api_fault("POST", "/api/sources/upload", status=401, skip=1)
    with pytest.raises(ProvisioningError, match="HTTP 401"):
        await provision(client, spec, poll_interval=30.0, concurrency=1)
    ours = [t for t in asyncio.all_tasks() if "_Runner" in t.get_coro().__qualname__]
    assert ours == []
    assert standin.counters["source_uploaded"] == 1
