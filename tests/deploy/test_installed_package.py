"""A normal (non-editable) install of powabot provisions from any directory: the built-in spec
and its seed content travel in the wheel, and an admin's own spec finds its files next to it.

How the install is made, faithfully but fast (a few seconds): a fresh virtualenv (`python -m venv
--without-pip`) into which the project venv's pip runs `pip install --no-deps <checkout>` (`pip
--python <fresh venv>`): the real PEP 517 build of a wheel from a copy of the checkout's sources,
installed into the fresh venv's site-packages with its `powabot` console script. The third-party
dependencies are not downloaded again: a `.pth` line puts the project venv's site-packages on the
fresh venv's path *after* its own, and since `.pth` files are not read from a directory a `.pth`
line adds, the project's editable-install hook stays inactive, so `bot` and `provisioning` come
from the fresh install only (asserted). The command then runs as a subprocess in an empty
directory against the Powabase stand-in served on 127.0.0.1 by this test process.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox.powabase import PowabaseStandin

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "seed-content"
DOMAINS = ("billing", "technical", "product")
# What `pip install .` reads from a checkout (the tracked files; no .venv, .git or caches).
SOURCES = ("pyproject.toml", "README.md", "bot", "provisioning", "sandbox", "seed-content")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding `pip install .` of this checkout; returns its bin/ directory."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this (project) venv: slack_bolt, httpx, pydantic…
    Path(purelib, "_project_dependencies.pth").write_text(deps + "\n", encoding="utf-8")
    # Build from a copy of the checkout's sources (links kept, as git checks them out), so the
    # build leaves no build/ or egg-info behind in the checkout.
    source = venv.parent / "source"
    for name in SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True, ignore=IGNORED)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(origin, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=180, check=False, env=_clean_env(),
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    located = subprocess.run(
        [
            python,
            "-c",
            "import bot, provisioning; print(bot.__file__); print(provisioning.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=venv,
    ).stdout.split()
    assert all(Path(p).is_relative_to(purelib) for p in located), located  # not the checkout
    return venv / "bin"


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment minus proxies (they would catch 127.0.0.1) and the bot's settings."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in proxies and not k.startswith(("POWABASE_", "SLACK_", "POWABOT_"))
    }
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


@pytest.fixture
async def standin() -> AsyncIterator[PowabaseStandin]:
    pb = PowabaseStandin(extraction_polls=1)
    await pb.start()
    try:
        yield pb
    finally:
        await pb.stop()


async def provision(
    bin_dir: Path, standin: PowabaseStandin, cwd: Path, *args: str
) -> tuple[int, str, str]:
    """`powabot provision ARGS` from the installed console script, in `cwd`."""
    process = await asyncio.create_subprocess_exec(
        bin_dir / "powabot",
        "provision",
        *args,
        cwd=cwd,
        env=_clean_env(POWABASE_URL=standin.url, POWABASE_API_KEY=standin.api_key),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def planned(out: str, kind: str) -> list[str]:
    return sorted(a["name"] for a in json.loads(out)["plan"] if a["kind"] == kind)


async def test_installed_powabot_plans_the_support_team_from_any_directory(
    installed: Path, standin: PowabaseStandin, tmp_path: Path
) -> None:
    """`powabot provision --dry-run` from an installed wheel plans 3 KBs and the 8 seed files."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, out, err = await provision(installed, standin, elsewhere, "--dry-run", "--output", "json")
    assert code == 0, err
    assert planned(out, "knowledge_base") == ["billing-kb", "product-kb", "technical-kb"]
    seed = sorted(
        f"{domain}-kb/{p.name}" for domain in DOMAINS for p in (SEED / domain).glob("*.md")
    )
    assert len(seed) == 8
    assert planned(out, "source") == seed
    assert json.loads(out)["dry_run"] is True
    assert not standin.context.store.knowledge_bases  # a dry run changes nothing


async def test_installed_powabot_takes_an_admins_spec_with_paths_relative_to_it(
    installed: Path, standin: PowabaseStandin, tmp_path: Path
) -> None:
    """`--spec` with relative paths finds the admin's files next to the spec, from any cwd."""
    admin = tmp_path / "admin"
    (admin / "docs").mkdir(parents=True)
    (admin / "docs" / "vpn.md").write_text("# VPN\nUse the office VPN.\n", encoding="utf-8")
    (admin / "team.toml").write_text(
        '[[knowledge_bases]]\nname = "it-kb"\nsource_folder = "docs"\n\n'
        '[[agents]]\nname = "it-agent"\nmodel = "gpt-5.4-mini"\nknowledge_base = "it-kb"\n'
        'system_prompt = "Answer IT questions from the knowledge base."\n\n'
        '[orchestration]\nname = "it-team"\ndescription = "IT help"\n\n'
        '[[orchestration.entities]]\nagent = "it-agent"\nrole_description = "IT questions"\n',
        encoding="utf-8",
    )
    code, out, err = await provision(
        installed, standin, tmp_path, "--spec", "admin/team.toml", "--dry-run", "--output", "json"
    )
    assert code == 0, err
    assert planned(out, "knowledge_base") == ["it-kb"]
    assert planned(out, "source") == ["it-kb/vpn.md"]
