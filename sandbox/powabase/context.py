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


CONTEXT = web.AppKey("powabase_context", Context)
