"""What every handler of the stand-in shares: the store, the fault plan and the timing knobs."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from sandbox.powabase.faults import FaultPlan
from sandbox.powabase.state import Store


@dataclass
class Context:
    api_key: str
    delta_delay: float = 0.0
    extraction_polls: int = 2
    keepalive_interval: float = 30.0
    store: Store = field(default_factory=Store)
    faults: FaultPlan = field(default_factory=FaultPlan)
    forced_extraction: dict[str, tuple[str, str]] = field(default_factory=dict)
    step_delay: float = 0.0  # model time between orchestration steps (routing, search, review)
    # Specialists the coordinator must ask, for the next runs (PowabaseStandin.ask_specialists).
    specialist_plans: list[SpecialistPlan] = field(default_factory=list)

    def next_specialists(self, message: str) -> tuple[str, ...] | None:
        """The specialists planned for a run of ``message`` (one use of the oldest matching
        plan), or None to let the coordinator route."""
        for plan in self.specialist_plans:
            if plan.remaining > 0 and plan.match.lower() in message.lower():
                plan.remaining -= 1
                if plan.remaining == 0:
                    self.specialist_plans.remove(plan)
                return plan.agents
        return None


@dataclass
class SpecialistPlan:
    """Ask ``agents`` in this order for the next ``remaining`` runs whose message contains
    ``match`` (case-insensitively; "" matches every run)."""

    agents: tuple[str, ...]
    remaining: int
    match: str = ""


CONTEXT = web.AppKey("powabase_context", Context)
