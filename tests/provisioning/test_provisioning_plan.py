"""The pure planner: desired spec + local files + remote state → create / update / skip."""

from __future__ import annotations

from pathlib import Path

from provisioning.api import (
    RemoteAgent,
    RemoteEntity,
    RemoteKnowledgeBase,
    RemoteOrchestration,
    RemoteSource,
)
from provisioning.plan import Action, Kind, RemoteState, Verb, drift_warnings, format_plan, plan
from provisioning.sources import LocalSource
from provisioning.spec import Spec, load_spec

SPEC = load_spec()


def local() -> dict[str, list[LocalSource]]:
    return {
        kb.name: [
            LocalSource(kb.name, Path(f"/x/{kb.name}/a.md"), "a.md", f"{kb.name}-hash-a", 10),
            LocalSource(kb.name, Path(f"/x/{kb.name}/b.md"), "b.md", f"{kb.name}-hash-b", 20),
        ]
        for kb in SPEC.knowledge_bases
    }


def in_sync(spec: Spec) -> RemoteState:
    """The state a complete earlier run leaves behind."""
    kbs = {
        kb.name: RemoteKnowledgeBase(id=f"kb-{kb.name}", name=kb.name)
        for kb in spec.knowledge_bases
    }
    sources = {
        name: [
            RemoteSource(id=f"src-{s.label}", name=s.name, metadata={"sha256": s.sha256})
            for s in files
        ]
        for name, files in local().items()
    }
    agents = {
        a.name: RemoteAgent(
            id=f"ag-{a.name}",
            name=a.name,
            model=a.model,
            system_prompt=a.system_prompt + "\n",
            settings={**a.settings, "server_default": 1},
        )
        for a in spec.agents
    }
    orch = spec.orchestration
    return RemoteState(
        knowledge_bases=kbs,
        kb_sources=sources,
        agents=agents,
        agent_kb_ids={a.name: {f"kb-{a.knowledge_base}"} for a in spec.agents},
        orchestration=RemoteOrchestration(
            id="orch-1",
            name=orch.name,
            description=orch.description,
            strategy=orch.strategy,
            orchestrator_config=dict(orch.orchestrator_config),
        ),
        entities=[
            RemoteEntity(
                id=f"ent-{e.agent}",
                entity_ref_id=f"ag-{e.agent}",
                role_description=e.role_description,
            )
            for e in orch.entities
        ],
    )


def verbs(actions: list[Action], kind: Kind) -> dict[str, Verb]:
    return {a.name: a.verb for a in actions if a.kind is kind}


def test_fresh_powabase_plans_everything_in_backend_order() -> None:
    """Against an empty Powabase every resource is created, KBs first and entities last."""
    actions = plan(SPEC, local(), RemoteState())
    assert {a.verb for a in actions} == {Verb.CREATE}
    kinds = [a.kind for a in actions]
    assert kinds == sorted(kinds, key=list(Kind).index)
    assert kinds.count(Kind.KNOWLEDGE_BASE) == 3 and kinds.count(Kind.SOURCE) == 6
    assert kinds.count(Kind.AGENT) == 3 and kinds.count(Kind.ENTITY) == 3
    kb = actions[0]
    assert kb.body["indexing_config"] == {
        "strategy": "chunk_embed",
        "embedding_model": "text-embedding-3-small",
    }


def test_in_sync_state_plans_only_skips() -> None:
    """When Powabase already matches (server-side extras and trailing newlines aside), skip all."""
    actions = plan(SPEC, local(), in_sync(SPEC))
    assert [a for a in actions if a.verb is not Verb.SKIP] == []
    source = next(a for a in actions if a.kind is Kind.SOURCE)
    assert source.remote_id == "src-billing-kb/a.md"


def test_changed_file_is_reuploaded_and_replaces_the_old_version() -> None:
    """A file whose hash differs is planned as an update that supersedes the old source."""
    files = local()
    changed = files["billing-kb"][1]
    files["billing-kb"][1] = LocalSource(
        changed.knowledge_base, changed.path, changed.name, "new-hash", 21
    )
    actions = plan(SPEC, files, in_sync(SPEC))
    updates = [a for a in actions if a.verb is not Verb.SKIP]
    assert len(updates) == 1
    (update,) = updates
    assert (update.kind, update.verb, update.name) == (Kind.SOURCE, Verb.UPDATE, "billing-kb/b.md")
    assert update.replaces == ("src-billing-kb/b.md",) and update.remote_id is None


def test_new_version_attached_but_old_not_yet_detached_only_detaches() -> None:
    """After an interrupted replace, the next plan detaches the stale version without uploading."""
    state = in_sync(SPEC)
    stale = RemoteSource(id="old", name="a.md", metadata={"sha256": "older"})
    state.kb_sources["billing-kb"].append(stale)
    (action,) = [a for a in plan(SPEC, local(), state) if a.verb is not Verb.SKIP]
    assert action.verb is Verb.UPDATE
    assert action.remote_id == "src-billing-kb/a.md" and action.replaces == ("old",)


def test_source_without_our_hash_is_uploaded_again() -> None:
    """A same-named source lacking our metadata is replaced (Powabase dedupes identical bytes)."""
    state = in_sync(SPEC)
    state.kb_sources["technical-kb"][0] = RemoteSource(id="foreign", name="a.md")
    (action,) = [a for a in plan(SPEC, local(), state) if a.verb is not Verb.SKIP]
    assert action.name == "technical-kb/a.md" and action.replaces == ("foreign",)


def test_changed_prompt_and_role_are_updates_in_place() -> None:
    """Only the changed fields of an agent and entity are sent, to the existing ids."""
    state = in_sync(SPEC)
    state.agents["product-agent"] = state.agents["product-agent"].model_copy(
        update={"system_prompt": "old prompt"}
    )
    state.entities[0] = state.entities[0].model_copy(update={"role_description": "old role"})
    changed = [a for a in plan(SPEC, local(), state) if a.verb is not Verb.SKIP]
    assert [(a.kind, a.name, a.remote_id) for a in changed] == [
        (Kind.AGENT, "product-agent", "ag-product-agent"),
        (Kind.ENTITY, "billing-agent", "ent-billing-agent"),
    ]
    assert dict(changed[0].body) == {"system_prompt": SPEC.agent("product-agent").system_prompt}
    assert dict(changed[1].body) == {
        "role_description": SPEC.orchestration.entities[0].role_description
    }


def test_changed_settings_keep_server_side_keys() -> None:
    """A settings change merges into the remote settings instead of dropping unknown keys."""
    state = in_sync(SPEC)
    agent = state.agents["billing-agent"]
    state.agents["billing-agent"] = agent.model_copy(
        update={"settings": {"reasoning_effort": "low", "server_default": 1}}
    )
    action = next(a for a in plan(SPEC, local(), state) if a.verb is Verb.UPDATE)
    assert dict(action.body) == {"settings": {"reasoning_effort": "medium", "server_default": 1}}


def test_missing_kb_assignment_and_entity_are_created() -> None:
    """An agent that lost its KB, or an entity that is missing, is planned for creation."""
    state = in_sync(SPEC)
    state.agent_kb_ids["technical-agent"].clear()
    del state.entities[2]
    changed = verbs(plan(SPEC, local(), state), Kind.AGENT_KNOWLEDGE_BASE)
    assert changed["technical-agent → technical-kb"] is Verb.CREATE
    entities = verbs(plan(SPEC, local(), state), Kind.ENTITY)
    assert entities == {
        "billing-agent": Verb.SKIP,
        "technical-agent": Verb.SKIP,
        "product-agent": Verb.CREATE,
    }


def test_format_plan_has_one_line_per_action() -> None:
    """The printed plan shows verb, kind and name of each resource."""
    actions = plan(SPEC, local(), RemoteState())
    text = format_plan(actions)
    assert len(text.splitlines()) == len(actions)
    assert "  create  knowledge_base billing-kb  (new)" in text.splitlines()


def test_remote_extras_are_warned_about_not_deleted() -> None:
    """Attached sources without a local file and entities outside the spec are reported."""
    state = in_sync(SPEC)
    state.kb_sources["product-kb"].append(RemoteSource(id="s9", name="old-roadmap.md"))
    state.entities.append(RemoteEntity(id="e9", entity_ref_id="ag-legacy", role_description="x"))
    assert drift_warnings(SPEC, local(), state) == [
        "product-kb: source 'old-roadmap.md' (s9) has no file in seed-content/product; "
        "left attached",
        f"{SPEC.orchestration.name}: entity e9 (agent ag-legacy) is not in the spec; left in place",
    ]
    assert drift_warnings(SPEC, local(), in_sync(SPEC)) == []
