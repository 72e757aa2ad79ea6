"""An answer's sources: read from a run's detail, whatever its shape, and fetched from Powabase."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.errors import (
    UpstreamConnectError,
    UpstreamStatusError,
    UpstreamStreamError,
    UpstreamTimeoutError,
)
from bot.powabase.client import PowabaseClient, make_http_client
from bot.powabase.events import parse_event
from bot.powabase.sources import (
    MAX_SOURCES,
    TITLE_CHARS,
    Source,
    knowledge_base_title,
    searched_knowledge_bases,
    sources_from_run,
)
from bot.state import AnswerState
from sandbox.powabase import PowabaseStandin
from sandbox.powabase.faults import ODD_DETAIL

REFUNDS = "https://docs.lumora.example/billing/refunds-faq"
PRICING = "https://docs.lumora.example/billing/plans-and-pricing"


def search_call(result: Any, tool: str = "knowledge_search", **arguments: Any) -> dict[str, Any]:
    return {
        "step": 1,
        "tool_name": tool,
        "arguments": {"query": "refund window", **arguments},
        "result": result,
        "duration_ms": 12,
    }


def hit(title: str, kb: str = "billing-kb", url: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"title": title, "knowledge_base": kb, "url": url, "content": "…", "score": 1.0, **extra}


def detail(*children: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"run_id": "orch_run_1", "status": "completed", "child_runs": list(children), **top}


# --- reading the detail ---------------------------------------------------------------------------


def test_citations_come_first_then_search_results_in_order() -> None:
    """Cited documents lead; the searches' other documents follow in the order they were found."""
    result = json.dumps({"results": [hit("Plans and pricing", url=PRICING), hit("Refunds FAQ")]})
    run = detail(
        {
            "tool_calls": [search_call(result)],
            "citations": [{"title": "Refunds FAQ", "url": REFUNDS, "knowledge_base": "billing-kb"}],
        },
        {"tool_calls": [search_call({"results": [hit("SSO setup", "technical-kb")]})]},
    )
    assert sources_from_run(run) == [
        Source("Refunds FAQ", "billing-kb", REFUNDS),
        Source("Plans and pricing", "billing-kb", PRICING),
        Source("SSO setup", "technical-kb", None),
    ]


def test_duplicates_are_merged_and_fill_in_a_missing_url() -> None:
    """The same document (same URL, or same title and KB in any case) is listed once."""
    run = detail(
        {
            "tool_calls": [
                search_call({"results": [hit("Refunds FAQ"), hit("refunds faq", kb="BILLING-KB")]}),
                search_call(
                    {"results": [hit("Refunds FAQ", url=REFUNDS), hit("Other", url=REFUNDS + "#x")]}
                ),
                search_call({"results": [hit("Refunds FAQ", kb="product-kb")]}),
            ]
        }
    )
    assert sources_from_run(run) == [
        Source("Refunds FAQ", "billing-kb", REFUNDS),
        Source("Refunds FAQ", "product-kb", None),
    ]


def test_at_most_five_sources() -> None:
    """However many documents the searches returned, the first five are kept."""
    results = {"results": [hit(f"Doc {n}", url=f"https://d.example/{n}") for n in range(9)]}
    run = detail({"tool_calls": [search_call(results)]})
    assert [s.title for s in sources_from_run(run)] == [f"Doc {n}" for n in range(MAX_SOURCES)]


@pytest.mark.parametrize(
    "entry",
    [
        {"document_name": "refunds-faq.md", "knowledge_base_name": "billing-kb"},
        {"source_name": "refunds-faq.md", "kb": "billing-kb"},
        {"metadata": {"filename": "refunds-faq.md", "knowledge_base": "billing-kb"}},
        {
            "document": {"name": "refunds-faq.md"},
            "knowledge_base": {"id": "kb1", "name": "billing-kb"},
        },
        {"source": {"name": "refunds-faq.md"}},
    ],
)
def test_other_result_spellings_name_the_document(entry: dict[str, Any]) -> None:
    """Titles, KBs and URLs are found under the field names search tools commonly use."""
    run = detail(
        {"tool_calls": [search_call({"documents": [entry], "knowledge_base": "billing-kb"})]}
    )
    assert sources_from_run(run) == [Source("refunds-faq.md", "billing-kb", None)]


def test_a_result_list_and_the_run_s_own_tool_calls_are_read() -> None:
    """A bare list of results, and a single-agent run's own tool calls, count too."""
    run = {"tool_calls": [search_call([hit("Refunds FAQ", url=REFUNDS)], tool="kb_search")]}
    assert sources_from_run(run) == [Source("Refunds FAQ", "billing-kb", REFUNDS)]


def test_delegations_and_other_tools_are_not_read_as_searches() -> None:
    """Only knowledge-search tools' results name sources (not delegations or a calculator)."""
    results = {"results": [hit("Refunds FAQ")]}
    run = detail(
        {
            "tool_calls": [
                search_call(results, "delegate_to_knowledge-agent"),
                search_call(results, "calc"),
            ]
        }
    )
    assert sources_from_run(run) == []


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,hi",
        "ftp://files.example/x",
        "mailto:help@example.com",
        "//docs.example/x",
        "https://",
        "https://docs.example/a b",
        "https://docs.example/\u202ereversed",
        "https://docs.example/" + "x" * 600,
        42,
    ],
)
def test_only_http_links_are_kept(url: object) -> None:
    """A URL that is not a plain http(s) link with a host is dropped; the document stays."""
    run = detail({"citations": [{"title": "Refunds FAQ", "url": url}]})
    assert sources_from_run(run) == [Source("Refunds FAQ", None, None)]


def test_titles_are_one_plain_line_of_bounded_length() -> None:
    """Control and bidi characters go, whitespace collapses, long titles are cut with "…"."""
    run = detail(
        {
            "citations": [
                {"title": "Refunds\u202e\u200b\n\tFAQ\x00"},
                {"title": "Long " * 100},
                {"title": " \n\t "},
            ]
        }
    )
    first, long = sources_from_run(run)
    assert first.title == "Refunds FAQ"
    assert len(long.title) == TITLE_CHARS and long.title.endswith("…")


def test_a_bare_string_citation_is_a_link_or_a_title() -> None:
    """Citations given as strings name a URL or a document; search results' strings do not."""
    run = detail(
        {
            "citations": [REFUNDS, "Billing policies"],
            "tool_calls": [search_call(["a passage of text", "another passage"])],
        }
    )
    assert sources_from_run(run) == [
        Source(REFUNDS, None, REFUNDS),
        Source("Billing policies", None, None),
    ]


# --- when no document can be named ----------------------------------------------------------------


def test_without_documents_the_searched_knowledge_bases_are_named() -> None:
    """Searches that name no document yield their knowledge bases, as "Billing knowledge base"."""
    no_docs = json.dumps({"knowledge_bases": ["billing-kb"], "results": []})
    run = detail(
        {"tool_calls": [search_call(no_docs)]},
        {"tool_calls": [search_call("Refunds take 3–5 days.", knowledge_base="technical-kb")]},
    )
    assert sources_from_run(run, searched_kbs=["billing-agent", "product-agent"]) == [
        Source("Billing knowledge base", None, None),
        Source("Technical knowledge base", None, None),
        Source("Product knowledge base", None, None),
    ]


@pytest.mark.parametrize("unreadable", [None, {}, [], "Run not found", ODD_DETAIL])
def test_an_unreadable_detail_falls_back_to_the_agents_that_searched(unreadable: object) -> None:
    """A missing or odd detail names what the stream showed was searched (or nothing)."""
    assert sources_from_run(unreadable) == []
    assert sources_from_run(unreadable, searched_kbs=["billing-agent", "Billing KB"]) == [
        Source("Billing knowledge base", None, None)
    ]


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("billing-kb", "Billing knowledge base"),
        ("billing-agent", "Billing knowledge base"),
        ("Billing KB", "Billing knowledge base"),
        ("technical_knowledge_base", "Technical knowledge base"),
        ("Lumora Help Center", "Lumora Help Center knowledge base"),
    ],
)
def test_knowledge_base_titles(name: str, title: str) -> None:
    """KB and agent names read as the knowledge base a user would recognise."""
    assert knowledge_base_title(name) == title


def test_searched_knowledge_bases_come_from_the_stream() -> None:
    """The agents of delegations that ran a knowledge search, once each, in order."""
    state = AnswerState(question="q", started_at=0.0)
    frames: list[dict[str, Any]] = []
    for n, (agent, tool) in enumerate(
        [
            ("billing-agent", "knowledge_search"),
            ("calc-agent", "calculator"),
            ("billing-agent", "kb_search"),
        ]
    ):
        frames += [
            {"event": "delegation_started", "agent": agent, "child_execution_id": f"x{n}"},
            {"event": "tool_call", "tool_name": tool, "call_id": f"c{n}", "arguments": {}},
            {"event": "delegation_completed", "agent": agent, "child_execution_id": f"x{n}"},
        ]
    for n, frame in enumerate(frames):
        state.apply(parse_event(None, json.dumps(frame)), float(n))
    assert searched_knowledge_bases(state.delegations) == ["billing-agent"]


# --- never raises ---------------------------------------------------------------------------------

ODD_SHAPES: list[object] = [
    0,
    True,
    "x",
    b"bytes",
    {"child_runs": None},
    {"child_runs": {"a": 1}},
    {"child_runs": [{"tool_calls": None, "citations": {"title": None}}]},
    {"child_runs": [{"tool_calls": [{"tool_name": "knowledge_search", "result": "[" * 100_000}]}]},
    {"child_runs": [{"tool_calls": [{"tool_name": "knowledge_search", "result": "{" + "x" * 10}]}]},
    {"tool_calls": [{"tool_name": None, "function": {"name": "knowledge_search"}, "result": []}]},
    {"tool_calls": [{"tool_name": "knowledge_search", "result": {"results": [None, 1, [], {}]}}]},
    {"citations": [{"title": {"nested": True}, "url": ["https://x.example"]}]},
    {"citations": [{"title": 1.5, "knowledge_base": 7}], "tool_calls": "none"},
    {"child_runs": [{"citations": [{"title": "\ud800 lone surrogate"}]}]},
]
_KEYS = [
    "child_runs",
    "tool_calls",
    "citations",
    "tool_name",
    "result",
    "results",
    "title",
    "url",
    "knowledge_base",
    "knowledge_bases",
    "metadata",
    "name",
]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value biased toward the keys and tool names the reader looks at."""
    roll = rng.random()
    if depth > 4 or roll < 0.3:
        return rng.choice(
            [
                None,
                True,
                rng.randint(-5, 5),
                1.5,
                "",
                "knowledge_search",
                "https://docs.example/x",
                "javascript:x",
                "<!channel>",
                json.dumps({"results": [{"title": "T", "url": "https://a.example"}]}),
                "{broken",
            ]
        )
    if roll < 0.6:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(_KEYS): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_odd_shapes_never_raise(shape: object) -> None:
    """Whatever the detail holds, reading it returns a (possibly empty) list of sources."""
    assert isinstance(sources_from_run(shape, searched_kbs=["billing-agent"]), list)


def test_random_details_never_raise_and_keep_the_rules() -> None:
    """Two thousand random JSON details: no exception, at most five sources, safe links only."""
    rng = random.Random(12)
    for _ in range(2000):
        found = sources_from_run(random_json(rng), searched_kbs=rng.choice([[], ["billing-kb"]]))
        assert len(found) <= MAX_SOURCES
        for source in found:
            assert source.title and len(source.title) <= TITLE_CHARS and "\n" not in source.title
            assert source.url is None or source.url.startswith(("https://", "http://"))


# --- fetching the detail from Powabase ------------------------------------------------------------


@pytest.fixture
async def client(powabase: Any) -> AsyncIterator[PowabaseClient]:
    http = make_http_client(powabase.url, powabase.api_key)
    pb = PowabaseClient(http, powabase.orchestration_id, owns_http=True)
    try:
        yield pb
    finally:
        await pb.aclose()


async def ask(client: PowabaseClient, question: str) -> tuple[str, AnswerState]:
    """Run ``question``; its run id and the answer state the stream built."""
    state = AnswerState(question=question, started_at=0.0)
    async for event in client.stream_run(question):
        state.apply(event, 1.0)
    assert state.run_id is not None
    return state.run_id, state


async def test_sources_of_a_real_run_name_the_documents_searched(client: PowabaseClient) -> None:
    """A billing answer's sources are the help-centre pages its search returned, with links."""
    run_id, _ = await ask(client, "What is the refund window for Pro annual?")
    assert sources_from_run(await client.run_detail(run_id)) == [
        Source("Refunds FAQ", "billing-kb", REFUNDS)
    ]


async def test_two_specialists_sources_come_from_both_knowledge_bases(
    client: PowabaseClient, powabase: PowabaseStandin
) -> None:
    """A two-specialist answer cites each specialist's documents, links where published."""
    powabase.ask_specialists(["billing-agent", "product-agent"])
    run_id, _ = await ask(client, "What's the difference between Business and Enterprise?")
    found = sources_from_run(await client.run_detail(run_id))
    assert {s.knowledge_base for s in found} == {"billing-kb", "product-kb"}
    product = [s for s in found if s.knowledge_base == "product-kb"]
    assert product[0].title.startswith("Feature matrix") and all(s.url is None for s in product)


async def test_odd_detail_falls_back_to_the_knowledge_bases_searched(
    client: PowabaseClient, powabase: PowabaseStandin
) -> None:
    """When the detail is odd-shaped the answer still names the knowledge base it searched."""
    run_id, state = await ask(client, "How do I authenticate against your API?")
    powabase.inject_detail_fault("odd_shape")
    detail = await client.run_detail(run_id)
    searched = searched_knowledge_bases(state.delegations)
    assert sources_from_run(detail, searched_kbs=searched) == [
        Source("Technical knowledge base", None, None)
    ]


async def test_run_detail_failures_are_upstream_errors(
    client: PowabaseClient, powabase: PowabaseStandin
) -> None:
    """404, slowness past the deadline and a refused connection raise typed upstream errors."""
    run_id, _ = await ask(client, "How do I authenticate against your API?")
    powabase.inject_detail_fault("not_found")
    with pytest.raises(UpstreamStatusError) as gone:
        await client.run_detail(run_id)
    assert gone.value.status == 404 and "Run not found" in gone.value.body_excerpt
    powabase.inject_detail_fault("slow", delay=0.5)
    with pytest.raises(UpstreamTimeoutError):
        await client.run_detail(run_id, within=0.1)
    assert (await client.run_detail(run_id))["run_id"] == run_id
    refused = PowabaseClient(make_http_client("http://127.0.0.1:9", "k"), "o", owns_http=True)
    with pytest.raises(UpstreamConnectError):
        await refused.run_detail(run_id)
    await refused.aclose()


@pytest.mark.parametrize(
    "body", [b"<html>Bad gateway</html>", b"[1, 2]", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"]
)
async def test_run_detail_that_is_not_a_json_object_is_a_stream_error(body: bytes) -> None:
    """A 200 whose body is not a JSON object raises UpstreamStreamError, not a parse error."""

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.raw_path == b"/api/orchestrations/runs/orch_run_%2F1"
        return httpx.Response(200, content=body)

    http = make_http_client("http://127.0.0.1:9", "k", transport=httpx.MockTransport(handler))
    pb = PowabaseClient(http, "o", owns_http=True)
    try:
        with pytest.raises(UpstreamStreamError):
            await pb.run_detail("orch_run_/1")
    finally:
        await pb.aclose()


async def test_an_oversized_run_detail_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A detail past the size cap is not read to the end: UpstreamStreamError."""
    monkeypatch.setattr("bot.powabase.client.MAX_RUN_DETAIL_BYTES", 1000)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"content": "x" * 5000})

    http = make_http_client("http://127.0.0.1:9", "k", transport=httpx.MockTransport(handler))
    pb = PowabaseClient(http, "o", owns_http=True)
    try:
        with pytest.raises(UpstreamStreamError, match="larger than"):
            await pb.run_detail("orch_run_1")
    finally:
        await pb.aclose()
