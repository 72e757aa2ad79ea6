"""A thin typed client for the Powabase admin endpoints provisioning uses.

`PowabaseAdmin` wraps one ``httpx.AsyncClient`` (passed in; it carries base URL and auth headers).
:meth:`PowabaseAdmin._call` is the one boundary where httpx errors and non-2xx answers become
:class:`PowabaseCallError` (a ``ProvisioningError``) naming the method, path, status and body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ProvisioningError

TERMINAL_STATUSES = frozenset({"extracted", "failed", "cancelled", "attention_required"})
PAGE_SIZE = 100
EXCERPT_CHARS = 300


class PowabaseCallError(ProvisioningError):
    """A Powabase call failed: ``status`` is None when Powabase could not be reached at all."""

    def __init__(
        self, method: str, path: str, status: int | None, detail: str, body: Any = None
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.body = body
        if status is None:
            text = f"{method} {path}: cannot reach Powabase: {detail}"
        elif status in (401, 403):
            text = (
                f"{method} {path}: HTTP {status} — Powabase rejected the API key "
                f"(check POWABASE_API_KEY): {detail}"
            )
        else:
            text = f"{method} {path}: HTTP {status}: {detail}"
        super().__init__(text)

    @property
    def is_config_problem(self) -> bool:
        """Unreachable URL or rejected key: the admin must fix settings, not retry."""
        return self.status in (None, 401, 403)


class _Remote(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class RemoteKnowledgeBase(_Remote):
    id: str
    name: str
    description: str | None = None


class RemoteSource(_Remote):
    id: str
    name: str | None = None
    extraction_status: str | None = None
    error_message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_may_be_json_text(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, str):
            try:
                decoded = json.loads(value)
            except ValueError:
                return {}
            return decoded if isinstance(decoded, dict) else {}
        return value

    @property
    def sha256(self) -> str | None:
        value = self.metadata.get("sha256")
        return value if isinstance(value, str) else None


class RemoteAgent(_Remote):
    id: str
    name: str
    model: str | None = None
    system_prompt: str | None = None
    settings: dict[str, Any] | None = None


class RemoteOrchestration(_Remote):
    id: str
    name: str
    description: str | None = None
    strategy: str | None = None
    orchestrator_config: dict[str, Any] | None = None


class RemoteEntity(_Remote):
    id: str
    entity_type: str = "agent"
    entity_ref_id: str
    role_description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_older_shape(cls, value: Any) -> Any:
        # The public docs show {"agent_id", "role"}; the backend entity_ref_id/role_description.
        if isinstance(value, dict):
            value = dict(value)
            if "entity_ref_id" not in value and "agent_id" in value:
                value["entity_ref_id"] = value["agent_id"]
            if "role_description" not in value and "role" in value:
                value["role_description"] = value["role"]
        return value


M = TypeVar("M", bound=BaseModel)


def _excerpt(response: httpx.Response) -> tuple[str, Any]:
    try:
        body = response.json()
    except ValueError:
        text = " ".join(response.text.split())
        return (text[:EXCERPT_CHARS] or "(empty body)"), None
    if isinstance(body, dict):
        message = body.get("error") or body.get("message")
        if isinstance(message, str):
            return message[:EXCERPT_CHARS], body
    return json.dumps(body)[:EXCERPT_CHARS], body


class PowabaseAdmin:
    """Typed calls to the Powabase admin API over a client the caller owns."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def _call(
        self,
        method: str,
        path: str,
        *,
        accept: Iterable[int] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send one request; return a 2xx or ``accept``ed answer, else raise PowabaseCallError."""
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise PowabaseCallError(
                method, path, None, f"{self.client.base_url} ({detail})"
            ) from exc
        if response.is_success or response.status_code in set(accept):
            return response
        detail, body = _excerpt(response)
        raise PowabaseCallError(method, path, response.status_code, detail, body)

    @staticmethod
    def _parse(model: type[M], data: Any, method: str, path: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ProvisioningError(
                f"{method} {path}: unexpected answer from Powabase: {str(data)[:EXCERPT_CHARS]}"
            ) from exc

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self._call(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ProvisioningError(
                f"{method} {path}: Powabase answered non-JSON: {response.text[:EXCERPT_CHARS]}"
            ) from exc

    def _items(self, data: Any, key: str, model: type[M], method: str, path: str) -> list[M]:
        items = data.get(key) if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ProvisioningError(f"{method} {path}: expected a {key!r} list, got: {data!r:.200}")
        return [self._parse(model, item, method, path) for item in items]

    async def _paginated(self, path: str, key: str, model: type[M], name: str) -> list[M]:
        """Every item whose ``name`` is exactly ``name``, following limit/offset pages."""
        matches: list[M] = []
        offset = 0
        while True:
            params = {"q": name, "limit": PAGE_SIZE, "offset": offset}
            data = await self._json("GET", path, params=params)
            page = self._items(data, key, model, "GET", path)
            matches.extend(item for item in page if getattr(item, "name", None) == name)
            offset += len(page)
            total = data.get("total") if isinstance(data, dict) else None
            if not page or not isinstance(total, int) or offset >= total:
                return matches

    # --- knowledge bases -------------------------------------------------------------------
    async def find_knowledge_bases(self, name: str) -> list[RemoteKnowledgeBase]:
        return await self._paginated(
            "/api/knowledge-bases", "knowledge_bases", RemoteKnowledgeBase, name
        )

    async def create_knowledge_base(self, body: Mapping[str, Any]) -> RemoteKnowledgeBase:
        path = "/api/knowledge-bases"
        return self._parse(
            RemoteKnowledgeBase, await self._json("POST", path, json=body), "POST", path
        )

    async def knowledge_base_source_ids(self, kb_id: str) -> list[str]:
        """Ids of the sources attached to a KB."""
        path = f"/api/knowledge-bases/{kb_id}/sources"
        data = await self._json("GET", path)
        items = data.get("sources") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ProvisioningError(f"GET {path}: expected a 'sources' list, got: {data!r:.200}")
        ids: list[str] = []
        for item in items:
            source_id = item.get("source_id") if isinstance(item, dict) else None
            if not isinstance(source_id, str):
                raise ProvisioningError(f"GET {path}: attachment without source_id: {item!r:.200}")
            ids.append(source_id)
        return ids

    async def attach_source(self, kb_id: str, source_id: str) -> None:
        await self._call(
            "POST", f"/api/knowledge-bases/{kb_id}/sources", json={"source_id": source_id}
        )

    async def detach_source(self, kb_id: str, source_id: str) -> None:
        """Ask Powabase to remove a source from a KB. 404/405 are tolerated (not attached, or no
        such route on this backend): callers check the KB's source list afterwards."""
        path = f"/api/knowledge-bases/{kb_id}/sources/{source_id}"
        await self._call("DELETE", path, accept=(404, 405))

    # --- sources ---------------------------------------------------------------------------
    async def get_source(self, source_id: str) -> RemoteSource:
        path = f"/api/sources/{source_id}"
        return self._parse(RemoteSource, await self._json("GET", path), "GET", path)

    async def upload_source(
        self, *, filename: str, content: bytes, content_type: str, metadata: Mapping[str, Any]
    ) -> tuple[RemoteSource, bool]:
        """Upload one file → (source, reused); reused when Powabase already had this content."""
        path = "/api/sources/upload"
        response = await self._call(
            "POST",
            path,
            accept=(409,),
            files={"file": (filename.rsplit("/", 1)[-1], content, content_type)},
            data={"name": filename, "metadata": json.dumps(dict(metadata), sort_keys=True)},
        )
        detail, body = _excerpt(response)
        if response.status_code == 409:
            duplicate = body.get("duplicate") if isinstance(body, dict) else None
            if not isinstance(duplicate, dict) or "id" not in duplicate:
                raise PowabaseCallError("POST", path, 409, detail, body)
            return self._parse(RemoteSource, duplicate, "POST", path), True
        return self._parse(RemoteSource, body, "POST", path), False

    # --- agents ----------------------------------------------------------------------------
    async def find_agents(self, name: str) -> list[RemoteAgent]:
        return await self._paginated("/api/agents", "agents", RemoteAgent, name)

    async def create_agent(self, body: Mapping[str, Any]) -> RemoteAgent:
        path = "/api/agents"
        return self._parse(RemoteAgent, await self._json("POST", path, json=body), "POST", path)

    async def update_agent(self, agent_id: str, changes: Mapping[str, Any]) -> None:
        await self._call("PUT", f"/api/agents/{agent_id}", json=changes)

    async def agent_knowledge_base_ids(self, agent_id: str) -> set[str]:
        path = f"/api/agents/{agent_id}/knowledge-bases"
        data = await self._json("GET", path)
        items = data.get("knowledge_bases") if isinstance(data, dict) else data
        if not isinstance(items, list):
            raise ProvisioningError(f"GET {path}: expected a 'knowledge_bases' list: {data!r:.200}")
        return {
            str(item["knowledge_base_id"])
            for item in items
            if isinstance(item, dict) and "knowledge_base_id" in item
        }

    async def assign_knowledge_base(self, agent_id: str, kb_id: str) -> bool:
        """Give a KB to an agent; False when it already had it (409)."""
        response = await self._call(
            "POST",
            f"/api/agents/{agent_id}/knowledge-bases",
            accept=(409,),
            json={"knowledge_base_id": kb_id, "config": {}},
        )
        return response.status_code != 409

    # --- orchestrations --------------------------------------------------------------------
    async def find_orchestrations(self, name: str) -> list[RemoteOrchestration]:
        path = "/api/orchestrations"
        data = await self._json("GET", path)
        items = self._items(data, "orchestrations", RemoteOrchestration, "GET", path)
        return [item for item in items if item.name == name]

    async def create_orchestration(self, body: Mapping[str, Any]) -> RemoteOrchestration:
        path = "/api/orchestrations"
        data = await self._json("POST", path, json=body)
        return self._parse(RemoteOrchestration, data, "POST", path)

    async def update_orchestration(self, orch_id: str, changes: Mapping[str, Any]) -> None:
        await self._call("PUT", f"/api/orchestrations/{orch_id}", json=changes)

    async def list_entities(self, orch_id: str) -> list[RemoteEntity]:
        path = f"/api/orchestrations/{orch_id}/entities"
        return self._items(await self._json("GET", path), "entities", RemoteEntity, "GET", path)

    async def add_entity(self, orch_id: str, body: Mapping[str, Any]) -> RemoteEntity:
        path = f"/api/orchestrations/{orch_id}/entities"
        return self._parse(RemoteEntity, await self._json("POST", path, json=body), "POST", path)

    async def update_entity(self, orch_id: str, entity_id: str, changes: Mapping[str, Any]) -> None:
        await self._call("PUT", f"/api/orchestrations/{orch_id}/entities/{entity_id}", json=changes)
