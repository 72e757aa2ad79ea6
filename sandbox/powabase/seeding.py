"""A test shortcut: put the state a successful provisioning would leave straight into the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sandbox.powabase.state import (
    Agent,
    AgentKb,
    Entity,
    KbSourceLink,
    KnowledgeBase,
    Orchestration,
    Source,
    Store,
    new_id,
)

ROLES = {
    "billing": (
        "Billing specialist: invoices, payments, charges, refunds, plan prices, subscriptions, "
        "upgrades and downgrades, seats, taxes and VAT, receipts, cancellations."
    ),
    "technical": (
        "Technical specialist: the REST API, API keys and authentication, rate limits, "
        "webhooks, integration errors, SSO and SAML setup, SCIM, troubleshooting."
    ),
    "product": (
        "Product specialist: features and what each plan (Starter, Pro, Business, Enterprise) "
        "includes, plan comparisons, usage limits, the roadmap and upcoming features."
    ),
}
# Seeded documents of these domains are published in Lumora's (made-up) help centre: their
# upload metadata carries `url` = DOCS_URL/<domain>/<file stem>, which search results and
# citations show. Product documents are internal: no URL. Uploaded sources have a URL only when
# their metadata names one.
DOCS_URL = "https://docs.lumora.example"
PUBLISHED_DOMAINS = frozenset({"billing", "technical"})
KB_DESCRIPTIONS = {
    "billing": "Billing policies, refund procedures, payment handling, tax info.",
    "technical": "API setup, authentication, rate limits, integration errors, SSO.",
    "product": "Feature matrix by plan, product limits and roadmap.",
}


def seed_store(store: Store, seed_dir: Path) -> str:
    """Create one KB, its sources and one agent per `seed_dir/<domain>/` holding `*.md` files,
    plus a supervisor orchestration with one entity per agent; returns the orchestration id."""
    domains = sorted(d for d in seed_dir.iterdir() if d.is_dir() and any(d.glob("*.md")))
    if not domains:
        raise ValueError(f"no <domain>/*.md seed documents under {seed_dir}")
    orch = Orchestration(
        new_id(),
        "Customer Support Team",
        "Customer support. Route each question to the right specialist.",
        "supervisor",
        {"additional_instructions": "Default to delegating.", "reasoning_effort": None},
        {},
    )
    store.orchestrations[orch.id] = orch
    for domain_dir in domains:
        domain = domain_dir.name
        kb = KnowledgeBase(
            new_id(),
            f"{domain}-kb",
            KB_DESCRIPTIONS.get(domain, f"{domain} documents"),
            {"strategy": "chunk_embed", "embedding_model": "text-embedding-3-small"},
            {},
        )
        store.knowledge_bases[kb.id] = kb
        for path in sorted(domain_dir.glob("*.md")):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            metadata = (
                {"url": f"{DOCS_URL}/{domain}/{path.stem}"} if domain in PUBLISHED_DOMAINS else {}
            )
            source = Source(
                new_id(),
                path.name,
                path.name,
                "md",
                data.decode("utf-8"),
                digest,
                len(data),
                metadata,
            )
            source.polls = 10**6  # long since extracted
            store.sources[source.id] = source
            link = KbSourceLink(new_id(), kb.id, source.id)
            store.kb_sources[link.id] = link
        agent = Agent(
            new_id(),
            f"{domain}-agent",
            "gpt-5.4-mini",
            f"You answer {domain} questions from the {domain}-kb knowledge base only.",
            {"reasoning_effort": "medium"},
        )
        store.agents[agent.id] = agent
        assignment = AgentKb(new_id(), agent.id, kb.id, {})
        store.agent_kbs[assignment.id] = assignment
        role = ROLES.get(domain, f"Specialist for {domain} questions.")
        entity = Entity(new_id(), orch.id, "agent", agent.id, role)
        store.entities[entity.id] = entity
    return orch.id
