"""Fixtures for the provisioning tests: a real-socket Powabase stand-in and a tmp seed copy."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from provisioning.spec import DEFAULT_SPEC, REPO_ROOT, Spec, load_spec
from sandbox.powabase import PowabaseStandin

PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
SEED = REPO_ROOT / "seed-content"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in ("POWABASE_URL", "POWABASE_API_KEY", "POWABASE_ORCHESTRATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env is read


@pytest.fixture
async def standin() -> AsyncIterator[PowabaseStandin]:
    pb = PowabaseStandin(extraction_polls=2)
    await pb.start()
    try:
        yield pb
    finally:
        await pb.stop()


@pytest.fixture
async def client(standin: PowabaseStandin) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"apikey": standin.api_key, "Authorization": f"Bearer {standin.api_key}"}
    async with httpx.AsyncClient(base_url=standin.url, headers=headers, timeout=10) as c:
        yield c


@pytest.fixture
def seed_root(tmp_path: Path) -> Path:
    """A repo-like folder holding a private copy of seed-content (tests may edit it)."""
    root = tmp_path / "repo"
    shutil.copytree(SEED, root / "seed-content")
    return root


@pytest.fixture
def spec(seed_root: Path) -> Spec:
    """The real support-team spec, with its relative paths pointing into ``seed_root``."""
    return load_spec(DEFAULT_SPEC, root=seed_root)


def seed_files(root: Path) -> list[Path]:
    return sorted(
        p
        for domain in ("billing", "technical", "product")
        for p in (root / "seed-content" / domain).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    )
