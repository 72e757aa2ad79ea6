"""The admin client: shapes in and out, and errors translated once with method, path and status."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.errors import ProvisioningError
from provisioning.api import PowabaseAdmin, PowabaseCallError


async def test_find_follows_pages_and_matches_names_exactly() -> None:
    """Listing walks limit/offset pages and keeps only exact name matches."""
    names = [f"billing-kb-{i}" for i in range(150)] + ["billing-kb"]
    seen_offsets: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        seen_offsets.append(request.url.params["offset"])
        assert request.url.params["q"] == "billing-kb"
        page = names[offset : offset + 100]
        items = [{"id": f"id-{n}", "name": n} for n in page]
        return httpx.Response(200, json={"knowledge_bases": items, "total": len(names)})

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        found = await PowabaseAdmin(client).find_knowledge_bases("billing-kb")
    assert [kb.id for kb in found] == ["id-billing-kb"]
    assert seen_offsets == ["0", "100"]


async def test_unauthorized_names_call_and_key() -> None:
    """A 401 becomes a PowabaseCallError naming the call, the status and POWABASE_API_KEY."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": "Invalid API key"})

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(PowabaseCallError) as info:
            await PowabaseAdmin(client).find_agents("billing-agent")
    error = info.value
    assert error.status == 401 and error.is_config_problem
    assert "GET /api/agents: HTTP 401" in str(error)
    assert "POWABASE_API_KEY" in str(error) and "Invalid API key" in str(error)


async def test_connect_error_keeps_the_cause() -> None:
    """An unreachable Powabase is a config problem whose __cause__ is the httpx error."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(PowabaseCallError) as info:
            await PowabaseAdmin(client).find_orchestrations("Team")
    assert info.value.status is None and info.value.is_config_problem
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "GET /api/orchestrations: cannot reach Powabase: http://pb.test" in str(info.value)


async def test_html_error_bodies_are_excerpted() -> None:
    """Framework error pages are shown as collapsed text, not as a JSON parse failure."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="<html>\n<h1>Internal   Server Error</h1></html>")

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(PowabaseCallError) as info:
            await PowabaseAdmin(client).create_agent({"name": "x"})
    assert not info.value.is_config_problem
    assert str(info.value) == (
        "POST /api/agents: HTTP 500: <html> <h1>Internal Server Error</h1></html>"
    )


async def test_upload_sends_multipart_and_reuses_duplicates() -> None:
    """Upload posts file, name and JSON metadata; a 409 duplicate_source returns the existing id."""
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read())
        return httpx.Response(
            409,
            json={
                "error": "duplicate_source",
                "duplicate": {"id": "src-1", "name": "a.md", "extraction_status": "extracted"},
            },
        )

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        source, reused = await PowabaseAdmin(client).upload_source(
            filename="guides/a.md",
            content=b"# A",
            content_type="text/markdown",
            metadata={"sha256": "abc"},
        )
    assert reused and source.id == "src-1" and source.extraction_status == "extracted"
    body = seen[0]
    assert b'filename="a.md"' in body and b"# A" in body
    assert b"guides/a.md" in body and json.dumps({"sha256": "abc"}).encode() in body


async def test_other_409s_on_upload_are_errors() -> None:
    """A 409 without a duplicate is not silently treated as success."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": "conflict"})

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(PowabaseCallError, match="HTTP 409: conflict"):
            await PowabaseAdmin(client).upload_source(
                filename="a.md", content=b"x", content_type="text/markdown", metadata={}
            )


async def test_assign_kb_conflict_means_already_assigned() -> None:
    """409 on KB assignment is reported as 'already there', not an error."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"error": "already assigned"})

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        assert await PowabaseAdmin(client).assign_knowledge_base("ag", "kb") is False


async def test_entities_in_the_older_shape_are_read() -> None:
    """Entities listed as {agent_id, role} (the older docs' shape) are understood."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"entities": [{"id": "e", "agent_id": "a", "role": "r"}]})

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        (entity,) = await PowabaseAdmin(client).list_entities("o")
    assert (entity.entity_ref_id, entity.role_description) == ("a", "r")


async def test_unexpected_shapes_name_the_call() -> None:
    """An answer of the wrong shape is a ProvisioningError naming the call."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": []})

    async with httpx.AsyncClient(
        base_url="http://pb.test", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(ProvisioningError, match="GET /api/agents: expected a 'agents' list"):
            await PowabaseAdmin(client).find_agents("x")
