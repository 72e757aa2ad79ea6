"""The scripted coordinator and specialists: decide who answers and what they say.

Everything here reads the store and returns text; streaming it is `runs.py`'s job. Specialists
only know what was uploaded, extracted and attached to a KB assigned to their agent.

Most questions go to one specialist. Two specialists answer when asked for explicitly
(``answer(..., specialists=["billing-agent", "technical-agent"])``, which the stand-in's
``ask_specialists`` knob feeds), or when a question is several questions (each ending in "?",
each of at least `FOLLOW_UP_WORDS` content words) that route to different specialists, e.g.
"How much does Business cost per seat? And how do I set up SAML single sign-on with Okta?".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sandbox.powabase.retrieval import (
    Candidate,
    Passage,
    bm25_scores,
    route,
    split_passages,
    tokenize,
)
from sandbox.powabase.state import Agent, KnowledgeBase, Orchestration, Source, Store

FOLLOW_UP_WORDS = 4
SEARCH_RESULTS = 3  # passages a knowledge search returns
_QUESTION = re.compile(r"[^?]*\?")
_H1 = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Hit:
    """One passage a knowledge search returned, with the document and KB it came from."""

    passage: Passage
    score: float
    kb: KnowledgeBase
    source: Source


@dataclass(frozen=True)
class Answer:
    """What one run will say: the delegation (if any), the specialist's report and the reply.

    With several specialists, the fields up to ``kb_names`` and ``hits`` are the first one's,
    ``also`` holds the others' (each an Answer of its own), and ``final`` is the combined reply.
    """

    agent: Agent | None
    task: str
    query: str
    passage: Passage | None
    report: str
    final: str
    kb_names: tuple[str, ...] = ()
    hits: tuple[Hit, ...] = ()
    also: tuple[Answer, ...] = ()

    @property
    def specialists(self) -> tuple[Answer, ...]:
        """Every delegation of the run, in order (empty when no specialist was asked)."""
        return (self, *self.also) if self.agent is not None else ()


def domain_of(agent_name: str) -> str:
    """ "billing-agent" -> "billing"."""
    return re.sub(r"[-_ ]?agent$", "", agent_name, flags=re.IGNORECASE) or agent_name


def retrieval_query(question: str, history: list[dict[str, str]]) -> str:
    """The question, widened with the previous user question when it is a short follow-up."""
    if len(tokenize(question)) >= FOLLOW_UP_WORDS:
        return question
    earlier = [m["content"] for m in history if m.get("role") == "user"]
    return f"{earlier[-1]} {question}" if earlier else question


@functools.lru_cache(maxsize=256)
def _passages_of(source_name: str, text: str) -> tuple[Passage, ...]:
    """Sources rarely change while questions stream in: split each version once (hundreds of
    runs starting together would otherwise stall the stand-in's event loop for seconds)."""
    return tuple(split_passages(source_name, text))


def agent_passages(store: Store, agent: Agent) -> tuple[Passage, ...]:
    return tuple(p for _kb, _source, p in _agent_index(store, agent))


def _agent_index(store: Store, agent: Agent) -> list[tuple[KnowledgeBase, Source, Passage]]:
    """Every passage the agent's KB search can see, with its KB and document, in search order."""
    return [
        (kb, source, passage)
        for kb in store.kbs_of(agent.id)
        for source in store.sources_of(kb.id)
        for passage in _passages_of(source.filename or source.name, source.text)
    ]


def search(store: Store, agent: Agent, query: str, limit: int = SEARCH_RESULTS) -> list[Hit]:
    """The agent's knowledge search: its best ``limit`` passages for ``query`` (score > 0),
    best first, ties to the earlier passage (so the first is `best_passage`'s choice)."""
    index = _agent_index(store, agent)
    raw = bm25_scores(tokenize(query), [p.tokens for _kb, _source, p in index])
    scores = [score * p.weight for score, (_kb, _source, p) in zip(raw, index, strict=True)]
    order = sorted((i for i in range(len(index)) if scores[i] > 0), key=lambda i: (-scores[i], i))
    return [Hit(index[i][2], scores[i], index[i][0], index[i][1]) for i in order[:limit]]


def document_title(source: Source) -> str:
    """A document's title: its first level-1 Markdown heading, else its file name."""
    match = _H1.search(source.text)
    return match.group(1) if match else (source.filename or source.name)


def document_url(source: Source) -> str | None:
    """The public URL of a document: an http(s) ``url`` in its upload metadata, else None."""
    url = source.metadata.get("url") if isinstance(source.metadata, dict) else None
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


def answer(
    store: Store,
    orchestration: Orchestration,
    question: str,
    history: list[dict[str, Any]],
    *,
    specialists: Sequence[str] | None = None,
) -> Answer:
    """Route ``question`` to its specialist(s) and build their reports and the final reply.

    ``specialists`` names the agents to ask, in order (unknown names are skipped); without it
    the coordinator routes (see the module docstring)."""
    query = retrieval_query(question, history)
    agents: list[Agent] = []
    candidates: list[Candidate] = []
    for entity in store.entities_of(orchestration.id):
        agent = store.agents.get(entity.entity_ref_id)
        if agent is None:
            continue
        kb_text = " ".join(f"{kb.name} {kb.description}" for kb in store.kbs_of(agent.id))
        profile = f"{entity.role_description} {domain_of(agent.name)} {kb_text}"
        agents.append(agent)
        candidates.append(Candidate(agent.name, profile, agent_passages(store, agent)))
    if specialists is not None:
        by_name = {a.name: a for a in agents}
        chosen_agents = [by_name[n] for n in dict.fromkeys(specialists) if n in by_name]
        parts = [_specialist(store, a, question, query) for a in chosen_agents]
        if len(parts) == 1:
            return parts[0]
        if parts:
            return _combined(parts)
    else:
        parts = _split_answers(store, agents, candidates, question)
        if len(parts) > 1:
            return _combined(parts)
        chosen = route(query, candidates)
        if chosen is not None:
            return _specialist(store, agents[chosen], question, query)
    final = (
        "I'm the coordinator for this team, but no specialists are attached to it yet, "
        "so I can't look that up."
    )
    return Answer(None, "", query, None, "", final)


def _split_answers(
    store: Store, agents: list[Agent], candidates: list[Candidate], question: str
) -> list[Answer]:
    """One Answer per specialist when ``question`` holds several questions routed to different
    specialists; [] otherwise (then the whole question is routed as one)."""
    asked = [m.group(0).strip() for m in _QUESTION.finditer(question)]
    if len(asked) < 2 or any(len(tokenize(q)) < FOLLOW_UP_WORDS for q in asked):
        return []
    routed: dict[int, list[str]] = {}
    for part in asked:
        chosen = route(part, candidates)
        if chosen is not None:
            routed.setdefault(chosen, []).append(part)
    if len(routed) < 2:
        return []
    return [_specialist(store, agents[i], " ".join(qs), " ".join(qs)) for i, qs in routed.items()]


def _specialist(store: Store, agent: Agent, question: str, query: str) -> Answer:
    """What ``agent`` finds for ``query`` and reports, and the reply it alone would give."""
    domain = domain_of(agent.name)
    kb_names = tuple(kb.name for kb in store.kbs_of(agent.id))
    task = f"Answer the customer's {domain} question using the knowledge base: {question}"
    hits = tuple(search(store, agent, query))
    passage = hits[0].passage if hits else None
    if passage is None:
        report = (
            f"I searched {', '.join(kb_names) or 'my knowledge base'} and found nothing relevant."
        )
        final = (
            f"I checked with our {domain} specialist, but our {domain} documentation doesn't "
            "cover that. Could you rephrase the question, or ask a teammate to follow up?"
        )
        return Answer(agent, task, query, None, report, final, kb_names, hits)
    where = f" under “{passage.heading}”" if passage.heading else ""
    report = (
        f"Found a relevant passage in {passage.source_name}{where}. "
        f"Summary for the coordinator: {_first_line(passage.body)}"
    )
    lead = f"Here is what our {domain} documentation says"
    lead += f" about **{passage.heading}**:" if passage.heading else ":"
    final = f"{lead}\n\n{passage.body}\n\nSource: {passage.source_name} ({domain} knowledge base)"
    return Answer(agent, task, query, passage, report, final, kb_names, hits)


def _combined(parts: list[Answer]) -> Answer:
    """Several specialists' answers as one run: the first one's fields, the rest in ``also``,
    and a reply with one section per specialist."""
    domains = [domain_of(p.agent.name) for p in parts if p.agent is not None]
    names = ", ".join(domains[:-1]) + f" and {domains[-1]}"
    sections = [f"I asked our {names} specialists."]
    for part, domain in zip(parts, domains, strict=True):
        title = domain[:1].upper() + domain[1:]
        if part.passage is None:
            sections.append(f"**{title}**: our {domain} documentation doesn't cover that part.")
            continue
        heading = f": {part.passage.heading}" if part.passage.heading else ""
        sections.append(
            f"**{title}{heading}**\n\n{part.passage.body}\n\n"
            f"Source: {part.passage.source_name} ({domain} knowledge base)"
        )
    first = parts[0]
    return replace(first, final="\n\n".join(sections), also=tuple(parts[1:]))


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:160]


def usage_for(*texts: str) -> dict[str, int]:
    """Deterministic token counts (about one token per word) for the texts of a run."""
    prompt = sum(len(t.split()) for t in texts[:-1]) + 120
    completion = len(texts[-1].split()) if texts else 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
