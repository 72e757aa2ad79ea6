"""The declarative provisioning spec: pydantic models, and the loader that checks a TOML file.

A spec names the knowledge bases (with their source folders), the agents (each with one KB), and
the orchestration with its entities. Relative paths resolve against the folder of the spec file
(or the ``root`` given to :func:`load_spec`, the CLI's ``--root``). Every problem is reported as
``<file>: <field>: <message>``.

The built-in spec ships inside the package with its content: ``provisioning/seed-content`` is a
link to the repository's ``seed-content/`` in a checkout and a copy of it in a built wheel
(package data), so ``powabot provision`` finds both from any directory, installed or not.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bot.errors import ProvisioningError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_SPEC = PACKAGE_DIR / "support-team.toml"  # its paths name PACKAGE_DIR / "seed-content"
# The source checkout's root (seed-content/ lives here); tools and tests of a checkout use it.
REPO_ROOT = PACKAGE_DIR.parent

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
IndexingStrategy = Literal["chunk_embed", "page_index", "graph_index", "full_document"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KnowledgeBaseSpec(_Strict):
    """One knowledge base and the folder whose files become its sources."""

    name: Name
    description: str = ""
    indexing_strategy: IndexingStrategy = "chunk_embed"
    embedding_model: Name = "text-embedding-3-small"
    source_folder: Path


class AgentSpec(_Strict):
    """One specialist agent searching exactly one knowledge base."""

    name: Name
    model: Name
    system_prompt: Text
    settings: dict[str, Any] = Field(default_factory=dict)
    knowledge_base: Name


class EntitySpec(_Strict):
    """An agent taking part in the orchestration, with the role text the coordinator routes by."""

    agent: Name
    role_description: Text


class OrchestrationSpec(_Strict):
    """The orchestration (a supervisor over the entities, by default)."""

    name: Name
    description: Text
    strategy: Literal["supervisor", "sequential", "parallel"] = "supervisor"
    orchestrator_config: dict[str, Any] = Field(default_factory=dict)
    entities: list[EntitySpec] = Field(min_length=1)


class Spec(_Strict):
    """A whole provisioning spec. ``path`` and ``root`` are set by :func:`load_spec`."""

    knowledge_bases: list[KnowledgeBaseSpec] = Field(min_length=1)
    agents: list[AgentSpec] = Field(min_length=1)
    orchestration: OrchestrationSpec
    eval_file: Path | None = None
    path: Path = Field(default=Path("<spec>"), exclude=True)
    root: Path = Field(default=PACKAGE_DIR, exclude=True)

    def resolve(self, path: Path) -> Path:
        """An absolute path for a path written in the spec (relative ones join the root)."""
        return path if path.is_absolute() else self.root / path

    def knowledge_base(self, name: str) -> KnowledgeBaseSpec:
        return next(kb for kb in self.knowledge_bases if kb.name == name)

    def agent(self, name: str) -> AgentSpec:
        return next(agent for agent in self.agents if agent.name == name)


def field_path(loc: tuple[int | str, ...]) -> str:
    """``('agents', 1, 'model')`` → ``agents[1].model`` (how the problem lines name a field)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def reference_problems(spec: Spec) -> list[str]:
    """Names that must be unique or must point at something the spec defines (pure)."""
    problems: list[str] = []
    kb_names = [kb.name for kb in spec.knowledge_bases]
    agent_names = [agent.name for agent in spec.agents]
    for label, names in (("knowledge_bases", kb_names), ("agents", agent_names)):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in seen:
                problems.append(f"{label}[{i}].name: duplicate name {name!r}")
            seen.add(name)
    for i, agent in enumerate(spec.agents):
        if agent.knowledge_base not in kb_names:
            problems.append(
                f"agents[{i}].knowledge_base: unknown knowledge base {agent.knowledge_base!r} "
                f"(the spec defines: {', '.join(kb_names)})"
            )
    seen_agents: set[str] = set()
    for i, entity in enumerate(spec.orchestration.entities):
        where = f"orchestration.entities[{i}].agent"
        if entity.agent not in agent_names:
            problems.append(
                f"{where}: unknown agent {entity.agent!r} (the spec defines: "
                f"{', '.join(agent_names)})"
            )
        elif entity.agent in seen_agents:
            problems.append(f"{where}: agent {entity.agent!r} is listed twice")
        seen_agents.add(entity.agent)
    return problems


def parse_spec(data: dict[str, Any], *, path: Path, root: Path) -> Spec:
    """Validate already-decoded spec data; raise one ProvisioningError listing every problem."""
    try:
        spec = Spec.model_validate({**data, "path": path, "root": root})
    except ValidationError as exc:
        lines = [f"{field_path(tuple(err['loc']))}: {err['msg']}" for err in exc.errors()]
        raise _spec_error(path, lines) from exc
    problems = reference_problems(spec)
    if problems:
        raise _spec_error(path, problems)
    return spec


def load_spec(path: Path = DEFAULT_SPEC, *, root: Path | None = None) -> Spec:
    """Read and validate a TOML spec file. ``root`` defaults to the spec file's folder."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProvisioningError(f"{path}: cannot read spec file: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProvisioningError(f"{path}: not valid TOML: {exc}") from exc
    for key in ("path", "root"):
        if key in data:
            raise _spec_error(path, [f"{key}: not a spec field (set by the loader)"])
    return parse_spec(data, path=path, root=(root or path.absolute().parent).resolve())


def _spec_error(path: Path, problems: list[str]) -> ProvisioningError:
    listed = "\n".join(f"  - {path}: {problem}" for problem in problems)
    return ProvisioningError(f"invalid provisioning spec {path}:\n{listed}")
