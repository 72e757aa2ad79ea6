"""Run the chosen phases one after another and collect their figures."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chaos import chaos_phase
from bench.config import BenchConfig
from bench.figures import Figure
from bench.phases import (
    FIRST_WORDS_CONFIGS,
    PhaseResult,
    first_words_phase,
    latency_phase,
    load_phase,
    streams_phase,
)
from bench.replicas import ReplicasResult, replicas_figures, replicas_phase, summary_figures
from bench.report import document, figures
from bench.world import load_questions


@dataclass
class BenchReport:
    config: BenchConfig
    results: dict[str, PhaseResult]
    figures: list[Figure]
    wall_s: float
    replicas: ReplicasResult | None = None

    def to_json(self) -> dict[str, Any]:
        out = document(self.config, self.results, self.figures, self.wall_s)
        if self.replicas is not None:
            out["phases"]["replicas"] = {
                "description": self.replicas.description,
                **summary_figures(self.replicas),
                "notes": self.replicas.notes,
            }
        return out


async def run_bench(cfg: BenchConfig, workdir: Path) -> BenchReport:
    """Every phase in `cfg.phases`, each in a fresh world; logs and databases go to `workdir`
    (an existing directory)."""
    questions = load_questions()
    started = time.monotonic()
    results: dict[str, PhaseResult] = {}
    if "latency" in cfg.phases:
        results["latency"] = await latency_phase(cfg, workdir, questions)
    if "load" in cfg.phases:
        results["load"] = await load_phase(cfg, workdir, questions, one_channel=False)
    if "one-channel" in cfg.phases:
        results["one-channel"] = await load_phase(cfg, workdir, questions, one_channel=True)
    if "streams" in cfg.phases:
        results["streams"] = await streams_phase(cfg, workdir, questions)
    if "chaos" in cfg.phases:
        results["chaos"] = await chaos_phase(cfg, workdir, questions)
    if "first-words" in cfg.phases:  # once per configuration: default (native), then classic
        for name in FIRST_WORDS_CONFIGS:
            results[name] = await first_words_phase(cfg, workdir, questions, name=name)
    replicas = None
    if "replicas" in cfg.phases:
        replicas = await replicas_phase(cfg, workdir, questions)
    wall = time.monotonic() - started
    found = figures(results, cfg) + (replicas_figures(replicas) if replicas else [])
    return BenchReport(cfg, results, found, wall, replicas)
