"""Carry out a plan against Powabase, in the backend's order, and collect the result.

Order: knowledge bases → sources (upload, wait for extraction, attach; a few at a time) → agents →
KB assignments → orchestration → entities. A source that fails (extraction ends badly, or one of its
calls fails) is recorded and the run carries on; any other failed call stops the run, and a re-run
picks up where it stopped because every step first looks for what already exists.
"""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import structlog

from provisioning.api import TERMINAL_STATUSES, PowabaseAdmin, PowabaseCallError, RemoteSource
from provisioning.observe import observe
from provisioning.plan import Action, Kind, Verb, drift_warnings, plan, source_metadata
from provisioning.progress import NullProgress, Progress
from provisioning.result import FailedSource, ProvisionResult
from provisioning.sources import LocalSource, collect_sources
from provisioning.spec import Spec
from provisioning.tasks import gather_or_cancel

log = structlog.get_logger(__name__)


async def provision(
    client: httpx.AsyncClient,
    spec: Spec,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    poll_interval: float = 2.0,
    poll_timeout: float = 120.0,
    concurrency: int = 4,
) -> ProvisionResult:
    """Make Powabase match ``spec`` (idempotent); with ``dry_run`` only plan.

    ``client`` must carry the Powabase base URL and auth headers. Raises ProvisioningError for bad
    input (before any call) and for failed calls outside the source pipeline.
    """
    progress = progress or NullProgress()
    local = collect_sources(spec)
    admin = PowabaseAdmin(client)
    state, warnings = await observe(admin, spec, concurrency=concurrency)
    actions = plan(spec, local, state)
    warnings += drift_warnings(spec, local, state)
    result = ProvisionResult(dry_run=dry_run, actions=actions, warnings=warnings)
    for warning in warnings:
        progress.note(f"warning: {warning}")
    if dry_run:
        for action in actions:
            result.count(action.verb)
        result.knowledge_base_ids = {n: kb.id for n, kb in state.knowledge_bases.items()}
        result.agent_ids = {n: agent.id for n, agent in state.agents.items()}
        result.orchestration_id = state.orchestration.id if state.orchestration else None
        return result
    runner = _Runner(admin, spec, result, progress, poll_interval, poll_timeout, concurrency)
    await runner.run(actions)
    log.info(
        "provision_finished",
        created=result.created,
        updated=result.updated,
        skipped=result.skipped,
        uploaded=result.uploaded,
        failed_sources=len(result.failed_sources),
    )
    return result


class _Runner:
    """Applies actions phase by phase, remembering the ids each phase produces."""

    def __init__(
        self,
        admin: PowabaseAdmin,
        spec: Spec,
        result: ProvisionResult,
        progress: Progress,
        poll_interval: float,
        poll_timeout: float,
        concurrency: int,
    ) -> None:
        self.admin = admin
        self.spec = spec
        self.result = result
        self.progress = progress
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.limit = asyncio.Semaphore(max(1, concurrency))

    def _done(self, action: Action, verb: Verb | None = None) -> None:
        verb = verb or action.verb
        self.result.count(verb)
        if verb is not Verb.SKIP:
            self.progress.note(f"{verb.value}d {action.kind.value} {action.name}")

    async def run(self, actions: list[Action]) -> None:
        by_kind = {kind: [a for a in actions if a.kind is kind] for kind in Kind}
        await self._knowledge_bases(by_kind[Kind.KNOWLEDGE_BASE])
        await self._sources(by_kind[Kind.SOURCE])
        await self._agents(by_kind[Kind.AGENT])
        await self._agent_kbs(by_kind[Kind.AGENT_KNOWLEDGE_BASE])
        await self._orchestration(by_kind[Kind.ORCHESTRATION])
        await self._entities(by_kind[Kind.ENTITY])

    async def _knowledge_bases(self, actions: list[Action]) -> None:
        ids = self.result.knowledge_base_ids
        for action in actions:
            if action.verb is Verb.CREATE:
                ids[action.name] = (await self.admin.create_knowledge_base(action.body)).id
            else:
                assert action.remote_id is not None
                ids[action.name] = action.remote_id
            self._done(action)

    # --- sources -------------------------------------------------------------------------
    async def _sources(self, actions: list[Action]) -> None:
        for action in actions:
            if action.verb is Verb.SKIP and action.source and action.remote_id:
                self._record_source(action.source, action.remote_id)
                self._done(action)
        work = [a for a in actions if a.verb is not Verb.SKIP]
        if not work:
            return
        self.progress.begin("sources", len(work))
        try:
            await gather_or_cancel(*(self._source(action) for action in work))
        finally:
            self.progress.end()

    def _record_source(self, source: LocalSource, source_id: str) -> None:
        self.result.source_ids.setdefault(source.knowledge_base, {})[source.name] = source_id

    def _fail(self, source: LocalSource, status: str, message: str = "") -> None:
        path = _shown_path(source, self.spec)
        failure = FailedSource(source.knowledge_base, source.name, path, status, message)
        self.result.failed_sources.append(failure)
        self.progress.step(source.label, f"FAILED ({status})", done=True)
        log.warning("source_failed", source=source.label, status=status)

    async def _source(self, action: Action) -> None:
        """Upload → wait for extraction → attach → detach the superseded version."""
        source = action.source
        assert source is not None
        kb_id = self.result.knowledge_base_ids[source.knowledge_base]
        try:
            if action.remote_id is not None:  # this content is attached; only old versions go
                self._record_source(source, action.remote_id)
                for old_id in action.replaces:
                    await self._detach(source, kb_id, old_id)
                self.result.count(action.verb)
                self.progress.step(source.label, "previous version handled", done=True)
                return
            async with self.limit:
                content = await asyncio.to_thread(source.path.read_bytes)
                metadata = {
                    **source_metadata(source),
                    "sha256": hashlib.sha256(content).hexdigest(),
                }
                remote, reused = await self.admin.upload_source(
                    filename=source.name,
                    content=content,
                    content_type=source.content_type,
                    metadata=metadata,
                )
            if reused:
                self.result.reused += 1
            else:
                self.result.uploaded += 1
            self.progress.step(source.label, "already on Powabase" if reused else "uploaded")
            final = await self._wait_for_extraction(source, remote)
            if final is None:
                return
            if final.extraction_status != "extracted":
                self._fail(source, final.extraction_status or "unknown", final.error_message or "")
                return
            async with self.limit:
                await self.admin.attach_source(kb_id, final.id)
            self._record_source(source, final.id)
            for old_id in action.replaces:
                if old_id != final.id:
                    await self._detach(source, kb_id, old_id)
        except PowabaseCallError as exc:
            if exc.is_config_problem:
                raise
            self._fail(source, "error", str(exc))
            return
        except OSError as exc:
            self._fail(source, "unreadable", str(exc))
            return
        self.result.count(action.verb)
        self.progress.step(source.label, "extracted and attached", done=True)

    async def _wait_for_extraction(
        self, source: LocalSource, remote: RemoteSource
    ) -> RemoteSource | None:
        """Poll until a terminal extraction status; None (and a failure) on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_timeout
        last = remote.extraction_status
        while remote.extraction_status not in TERMINAL_STATUSES:
            if loop.time() >= deadline:
                self._fail(
                    source,
                    "timeout",
                    f"still {remote.extraction_status!r} after {self.poll_timeout:g} s",
                )
                return None
            await asyncio.sleep(self.poll_interval)
            async with self.limit:
                remote = await self.admin.get_source(remote.id)
            if remote.extraction_status != last:
                last = remote.extraction_status
                self.progress.step(source.label, str(last))
        return remote

    async def _detach(self, source: LocalSource, kb_id: str, old_id: str) -> None:
        """Detach the superseded version, then check the KB really let go of it."""
        async with self.limit:
            await self.admin.detach_source(kb_id, old_id)
            still_attached = old_id in await self.admin.knowledge_base_source_ids(kb_id)
        if still_attached:
            warning = (
                f"{source.label}: the previous version (source {old_id}) is still attached; "
                "this Powabase refused to detach it — remove it from the KB by hand"
            )
            self.result.warnings.append(warning)
            self.progress.note(f"warning: {warning}")
        else:
            self.progress.step(source.label, f"previous version {old_id} detached")

    # --- agents, orchestration, entities -----------------------------------------------
    async def _agents(self, actions: list[Action]) -> None:
        ids = self.result.agent_ids
        for action in actions:
            if action.verb is Verb.CREATE:
                ids[action.name] = (await self.admin.create_agent(action.body)).id
            else:
                assert action.remote_id is not None
                ids[action.name] = action.remote_id
                if action.verb is Verb.UPDATE:
                    await self.admin.update_agent(action.remote_id, action.body)
            self._done(action)

    async def _agent_kbs(self, actions: list[Action]) -> None:
        for action in actions:
            if action.verb is Verb.SKIP:
                self._done(action)
                continue
            assert action.agent is not None and action.knowledge_base is not None
            agent_id = self.result.agent_ids[action.agent]
            kb_id = self.result.knowledge_base_ids[action.knowledge_base]
            added = await self.admin.assign_knowledge_base(agent_id, kb_id)
            self._done(action, None if added else Verb.SKIP)

    async def _orchestration(self, actions: list[Action]) -> None:
        for action in actions:
            if action.verb is Verb.CREATE:
                orch_id = (await self.admin.create_orchestration(action.body)).id
            else:
                assert action.remote_id is not None
                orch_id = action.remote_id
                if action.verb is Verb.UPDATE:
                    await self.admin.update_orchestration(orch_id, action.body)
            self.result.orchestration_id = orch_id
            self._done(action)

    async def _entities(self, actions: list[Action]) -> None:
        orch_id = self.result.orchestration_id
        assert orch_id is not None
        for action in actions:
            assert action.agent is not None
            if action.verb is Verb.CREATE:
                body = {**action.body, "entity_ref_id": self.result.agent_ids[action.agent]}
                entity_id = (await self.admin.add_entity(orch_id, body)).id
            else:
                assert action.remote_id is not None
                entity_id = action.remote_id
                if action.verb is Verb.UPDATE:
                    await self.admin.update_entity(orch_id, entity_id, action.body)
            self.result.entity_ids[action.agent] = entity_id
            self._done(action)


def _shown_path(source: LocalSource, spec: Spec) -> str:
    """The file as the admin knows it: relative to the root when it lies inside it."""
    try:
        return source.path.relative_to(spec.root).as_posix()
    except ValueError:
        return str(source.path)
