"""What a provisioning run did (or, in a dry run, would do)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioning.plan import Action, Verb


@dataclass(frozen=True)
class FailedSource:
    """A source that did not end up extracted and attached; ``status`` says how it ended."""

    knowledge_base: str
    file: str
    path: str
    status: str
    message: str = ""

    def describe(self) -> str:
        tail = f": {self.message}" if self.message else ""
        return f"{self.path} ({self.knowledge_base}/{self.file}): {self.status}{tail}"


@dataclass
class ProvisionResult:
    """Ids of everything provisioned, counts per verb, and the sources that failed."""

    dry_run: bool
    actions: list[Action] = field(default_factory=list)
    orchestration_id: str | None = None
    knowledge_base_ids: dict[str, str] = field(default_factory=dict)
    agent_ids: dict[str, str] = field(default_factory=dict)
    entity_ids: dict[str, str] = field(default_factory=dict)
    source_ids: dict[str, dict[str, str]] = field(default_factory=dict)
    created: int = 0
    updated: int = 0
    skipped: int = 0
    uploaded: int = 0
    reused: int = 0
    failed_sources: list[FailedSource] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_sources

    def count(self, verb: Verb) -> None:
        if verb is Verb.CREATE:
            self.created += 1
        elif verb is Verb.UPDATE:
            self.updated += 1
        else:
            self.skipped += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "orchestration_id": self.orchestration_id,
            "knowledge_base_ids": self.knowledge_base_ids,
            "agent_ids": self.agent_ids,
            "entity_ids": self.entity_ids,
            "source_ids": self.source_ids,
            "counts": {
                "created": self.created,
                "updated": self.updated,
                "skipped": self.skipped,
                "uploaded": self.uploaded,
                "reused": self.reused,
            },
            "failed_sources": [vars(f) for f in self.failed_sources],
            "warnings": self.warnings,
            "plan": [
                {"kind": a.kind.value, "verb": a.verb.value, "name": a.name, "detail": a.detail}
                for a in self.actions
            ],
        }
