"""The scripted coordinator and specialists: decide who answers and what they say.

Everything here reads the store and returns text; streaming it is `runs.py`'s job. Specialists
only know what was uploaded, extracted and attached to a KB assigned to their agent.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from sandbox.powabase.retrieval import (
    Candidate,
    Passage,
    best_passage,
    route,
    split_passages,
    tokenize,
)
from sandbox.powabase.state import Agent, Orchestration, Store

FOLLOW_UP_WORDS = 4


@dataclass(frozen=True)
class Answer:
    """What one run will say: the delegation (if any), the specialist's report and the reply."""

    agent: Agent | None
    task: str
    query: str
    passage: Passage | None
    report: str
    final: str
    kb_names: tuple[str, ...] = ()


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
    passages: list[Passage] = []
    for kb in store.kbs_of(agent.id):
        for source in store.sources_of(kb.id):
            passages.extend(_passages_of(source.filename or source.name, source.text))
    return tuple(passages)


def answer(
    store: Store, orchestration: Orchestration, question: str, history: list[dict[str, Any]]
) -> Answer:
    """Route ``question`` to one entity and build the specialist's report and the final reply."""
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
    chosen = route(query, candidates)
    if chosen is None:
        final = (
            "I'm the coordinator for this team, but no specialists are attached to it yet, "
            "so I can't look that up."
        )
        return Answer(None, "", query, None, "", final)
    agent, candidate = agents[chosen], candidates[chosen]
    domain = domain_of(agent.name)
    kb_names = tuple(kb.name for kb in store.kbs_of(agent.id))
    task = f"Answer the customer's {domain} question using the knowledge base: {question}"
    passage, _ = best_passage(query, candidate.passages)
    if passage is None:
        report = (
            f"I searched {', '.join(kb_names) or 'my knowledge base'} and found nothing relevant."
        )
        final = (
            f"I checked with our {domain} specialist, but our {domain} documentation doesn't "
            "cover that. Could you rephrase the question, or ask a teammate to follow up?"
        )
        return Answer(agent, task, query, None, report, final, kb_names)
    where = f" under “{passage.heading}”" if passage.heading else ""
    report = (
        f"Found a relevant passage in {passage.source_name}{where}. "
        f"Summary for the coordinator: {_first_line(passage.body)}"
    )
    lead = f"Here is what our {domain} documentation says"
    lead += f" about **{passage.heading}**:" if passage.heading else ":"
    final = f"{lead}\n\n{passage.body}\n\nSource: {passage.source_name} ({domain} knowledge base)"
    return Answer(agent, task, query, passage, report, final, kb_names)


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
