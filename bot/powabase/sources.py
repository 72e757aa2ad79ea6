"""Which documents an answer rests on, read from a run's detail (pure, no I/O, never raises).

The stream's `tool_result` carries only a 200-character preview, so after `complete` the bot
reads `GET /api/orchestrations/runs/{run_id}` and `sources_from_run` names the documents in it:

1. ``citations`` — of the run itself, then of each ``child_runs[]`` entry, in order. An entry is a
   mapping with a title (``title`` / ``document_name`` / ``source_name`` / ``source`` /
   ``filename`` / ``name``), a URL (``url`` / ``source_url`` / ``link`` / ``uri``) and a knowledge
   base (``knowledge_base`` / ``knowledge_base_name`` / ``kb_name`` / ``kb``), possibly under a
   nested ``metadata`` / ``document`` / ``source`` mapping; a bare string is a URL or a title.
2. ``tool_calls[].result`` of knowledge-search tools (the tool name contains "search" or
   "knowledge" and is not a ``delegate_to_…`` call), of the run and each child run: a JSON
   string or an already-decoded value. The documents are the entries of the first list found
   under ``results`` / ``documents`` / ``sources`` / ``chunks`` / ``hits`` / ``matches`` /
   ``items`` / ``data`` (or the value itself when it is a list), read like citations; a result
   level ``knowledge_base`` applies to entries without one.

Sources are deduplicated (the same URL without its ``#fragment``, else the same title in the same
or an unnamed knowledge base, case-insensitively; a later duplicate only fills in a missing URL
or knowledge base), keep the order they first appear in, and are at most ``limit`` (5).

When no document can be identified, the knowledge bases searched are named instead, as
``Source(title="Billing knowledge base", knowledge_base=None, url=None)``. Their names come from
the detail (a search tool's ``knowledge_base(s)`` argument, a search result's
``knowledge_base(s)``) and then from ``searched_kbs``: names the caller knows from the stream,
either KB names or the agents that searched (`searched_knowledge_bases(state.delegations)` gives
the agents of delegations that ran a knowledge search): "billing-kb", "billing-agent" and
"Billing KB" all read as "Billing knowledge base".

Anything of another type or shape is skipped. Titles and names are plain text: control and
format characters (bidi overrides, zero-width characters) removed, whitespace collapsed, cut to
`TITLE_CHARS`; renderers still escape them for their markup. URLs are kept only when they are
``http(s)://`` with a host, at most `URL_CHARS` long, without spaces or control characters.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from bot.render.labels import shorten
from bot.render.links import target_host

MAX_SOURCES = 5
TITLE_CHARS = 120
KB_CHARS = 80
URL_CHARS = 500  # longer links (signed, tracking) are not shown: titles stay readable
# Bounds on the work one (possibly enormous or hostile) run detail can cause.
MAX_CHILD_RUNS = 100
MAX_TOOL_CALLS = 200
MAX_ENTRIES = 200  # citations or results read per list
MAX_RESULT_CHARS = 2_000_000  # a search result string longer than this is not parsed

TITLE_KEYS = ("title", "document_name", "source_name", "filename", "file_name", "name", "source")
URL_KEYS = ("url", "source_url", "link", "uri", "href")
KB_KEYS = ("knowledge_base", "knowledge_base_name", "kb_name", "kb")
KB_LIST_KEYS = ("knowledge_bases", "knowledge_base_names")
NESTED_KEYS = ("metadata", "document", "source")
RESULT_LIST_KEYS = ("results", "documents", "sources", "chunks", "hits", "matches", "items", "data")
DELEGATE_PREFIX = "delegate_to_"

_URL = re.compile(r"https?://[^\s]+", re.IGNORECASE)
_KB_SUFFIX = re.compile(
    r"(?:[\s_-]+(?:kb|knowledge[\s_-]*base|agent|specialist|docs?))+$", re.IGNORECASE
)


@dataclass(frozen=True)
class Source:
    """One document an answer rests on; ``knowledge_base`` None for a KB named as a whole."""

    title: str
    knowledge_base: str | None
    url: str | None


class _ToolStep(Protocol):
    @property
    def tool_name(self) -> str: ...


class _Delegation(Protocol):
    @property
    def agent(self) -> str: ...

    @property
    def tool_calls(self) -> Sequence[_ToolStep]: ...


def is_search_tool(name: object) -> bool:
    """Whether a tool with this name is a knowledge-base search (not a delegation)."""
    if not isinstance(name, str) or name.startswith(DELEGATE_PREFIX):
        return False
    lowered = name.lower()
    return "search" in lowered or "knowledge" in lowered


def searched_knowledge_bases(delegations: Iterable[_Delegation]) -> list[str]:
    """The agents of the delegations that ran a knowledge search (``AnswerState.delegations``),
    in order, once each: what `sources_from_run` names when the detail names no document."""
    agents: list[str] = []
    for delegation in delegations:
        searched = any(is_search_tool(step.tool_name) for step in delegation.tool_calls)
        if searched and delegation.agent and delegation.agent not in agents:
            agents.append(delegation.agent)
    return agents


def knowledge_base_title(name: str) -> str:
    """ "billing-kb" / "billing-agent" / "Billing KB" → "Billing knowledge base"."""
    return f"{kb_words(name)} knowledge base"


def kb_words(name: str) -> str:
    """What a KB (or the agent searching it) is about: "billing-kb" → "Billing"; a name with
    no such suffix is kept ("Lumora Help Center"). Plain text, capitalised."""
    text = clean_text(name, KB_CHARS)
    bare = _KB_SUFFIX.sub("", text).strip(" -_") or text
    words = " ".join(re.split(r"[\s_-]+", bare)) if bare.islower() or "-" in bare else bare
    return words[:1].upper() + words[1:]


def sources_from_run(
    detail: object, *, searched_kbs: Sequence[str] = (), limit: int = MAX_SOURCES
) -> list[Source]:
    """The documents a run's detail cites or its searches returned (see the module docstring);
    failing that, its searched knowledge bases. Never raises, whatever ``detail`` is."""
    try:
        return _sources(detail, searched_kbs, limit)
    except RecursionError:  # a pathologically nested value: treat as unreadable
        return _kb_sources([], searched_kbs, limit)


def _sources(detail: object, searched_kbs: Sequence[str], limit: int) -> list[Source]:
    found = _Found(limit)
    kb_names: list[str] = []
    runs = list(_runs(detail))
    for run in runs:
        for entry in _entries(run.get("citations")):
            found.add(_source_of(entry, None, bare_strings=True))
    for run in runs:
        for call in _list(run.get("tool_calls"), MAX_TOOL_CALLS):
            if not isinstance(call, Mapping) or not is_search_tool(_tool_name(call)):
                continue
            arguments = _decoded(call.get("arguments"))
            default_kb = _kb_of(arguments)
            kb_names += _kb_names(arguments)
            result = _decoded(call.get("result"))
            kb_names += _kb_names(result)
            default_kb = _kb_of(result) or default_kb
            for entry in _result_entries(result):
                source = _source_of(entry, default_kb)
                if source is not None and source.knowledge_base:
                    kb_names.append(source.knowledge_base)
                found.add(source)
    if found.sources:
        return found.sources
    return _kb_sources(kb_names, searched_kbs, limit)


def _kb_sources(from_detail: list[str], searched_kbs: Sequence[str], limit: int) -> list[Source]:
    names = [*from_detail, *(s for s in searched_kbs if isinstance(s, str))]
    out: list[Source] = []
    seen: set[str] = set()
    for name in names:
        if not clean_text(name, KB_CHARS):
            continue
        title = knowledge_base_title(name)
        if title.casefold() not in seen and len(out) < limit:
            seen.add(title.casefold())
            out.append(Source(title, None, None))
    return out


class _Found:
    """Sources in order of first appearance, deduplicated, at most ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self.sources: list[Source] = []

    def add(self, source: Source | None) -> None:
        if source is None:
            return
        for index, known in enumerate(self.sources):
            if _same(known, source):
                self.sources[index] = replace(
                    known,
                    url=known.url or source.url,
                    knowledge_base=known.knowledge_base or source.knowledge_base,
                )
                return
        if len(self.sources) < self.limit:
            self.sources.append(source)


def _same(a: Source, b: Source) -> bool:
    if a.url and b.url:
        return _url_key(a.url) == _url_key(b.url)
    if a.title.casefold() != b.title.casefold():
        return False
    return (
        a.knowledge_base is None
        or b.knowledge_base is None
        or (a.knowledge_base.casefold() == b.knowledge_base.casefold())
    )


def _url_key(url: str) -> str:
    return url.split("#", 1)[0].rstrip("/").casefold()


def _runs(detail: object) -> Iterator[Mapping[str, Any]]:
    """The run itself, then its child runs (mappings only)."""
    if not isinstance(detail, Mapping):
        return
    yield detail
    for child in _list(detail.get("child_runs"), MAX_CHILD_RUNS):
        if isinstance(child, Mapping):
            yield child


def _list(value: object, cap: int) -> list[Any]:
    return list(value[:cap]) if isinstance(value, list) else []


def _entries(value: object) -> list[Any]:
    value = _decoded(value)
    if isinstance(value, Mapping):
        return [value]
    return _list(value, MAX_ENTRIES)


def _decoded(value: object) -> object:
    """A JSON string decoded (anything else as it is; undecodable text stays text)."""
    if isinstance(value, str) and len(value) <= MAX_RESULT_CHARS:
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                return json.loads(stripped)
            except (ValueError, RecursionError):
                return value
    return value


def _result_entries(result: object) -> list[Any]:
    if isinstance(result, list):
        return result[:MAX_ENTRIES]
    if isinstance(result, Mapping):
        for key in RESULT_LIST_KEYS:
            value = result.get(key)
            if isinstance(value, list):
                return value[:MAX_ENTRIES]
    return []


def _tool_name(call: Mapping[str, Any]) -> object:
    name = call.get("tool_name", call.get("name"))
    function = call.get("function")
    if name is None and isinstance(function, Mapping):
        name = function.get("name")
    return name


def _source_of(
    entry: object, default_kb: str | None, *, bare_strings: bool = False
) -> Source | None:
    """A Source from one citation or search result, or None when it names no document. A
    bare string names one (as its URL or title) only as a citation: a search result's strings
    are passages."""
    if isinstance(entry, str) and bare_strings:
        text = entry.strip()
        link = _clean_url(text) if _URL.fullmatch(text) else None
        name = clean_text(text, TITLE_CHARS)
        return Source(name, default_kb, link) if name else None
    if not isinstance(entry, Mapping):
        return None
    layers = [entry, *(entry[k] for k in NESTED_KEYS if isinstance(entry.get(k), Mapping))]
    title = _first(layers, TITLE_KEYS, TITLE_CHARS)
    url = next((u for u in (_clean_url(_get(layers, k)) for k in URL_KEYS) if u), None)
    kb = _first(layers, KB_KEYS, KB_CHARS) or default_kb
    if not title and url:
        title = clean_text(url, TITLE_CHARS)
    return Source(title, kb, url) if title else None


def _get(layers: list[Mapping[str, Any]], key: str) -> object:
    return next((layer[key] for layer in layers if layer.get(key) is not None), None)


def _first(layers: list[Mapping[str, Any]], keys: Sequence[str], limit: int) -> str | None:
    for key in keys:
        for layer in layers:
            value = layer.get(key)
            if isinstance(value, Mapping):  # {"knowledge_base": {"id", "name"}}
                value = value.get("name")
            text = clean_text(value, limit) if isinstance(value, str) else ""
            if text:
                return text
    return None


def _kb_of(value: object) -> str | None:
    return _first([value], KB_KEYS, KB_CHARS) if isinstance(value, Mapping) else None


def _kb_names(value: object) -> list[str]:
    """Knowledge-base names a search's arguments or result mention (``knowledge_base(s)``)."""
    if not isinstance(value, Mapping):
        return []
    names = [name] if (name := _kb_of(value)) else []
    for key in KB_LIST_KEYS:
        for item in _list(value.get(key), MAX_ENTRIES):
            if isinstance(item, Mapping):
                item = item.get("name")
            if isinstance(item, str) and (text := clean_text(item, KB_CHARS)):
                names.append(text)
    return names


def clean_text(value: object, limit: int) -> str:
    """Plain one-line text: control/format characters dropped, whitespace collapsed, cut."""
    if not isinstance(value, str):
        return ""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in value[: limit * 4]
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    return shorten(kept, limit)


def _clean_url(value: object) -> str | None:
    """``value`` when it is a plain http(s) URL with a host, else None."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or len(url) > URL_CHARS or not url.lower().startswith(("http://", "https://")):
        return None
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        return None
    return url if target_host(url) else None
