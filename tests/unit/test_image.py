"""The production image, read from the Dockerfile (no Docker engine needed): unprivileged, a
writable default store, and no stand-ins or tools inside."""

from __future__ import annotations

import fnmatch
import shlex
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("sandbox", "bench", "tests")


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]


def _stages() -> list[Stage]:
    """The Dockerfile's stages: (INSTRUCTION, arguments) pairs, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in (REPO / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[-1] if "AS" in (p.upper() for p in parts) else parts[0]))
        stages[-1].instructions.append((word.upper(), rest.strip()))
    return stages


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.args("ENV"):
        for pair in shlex.split(rest):
            name, _, value = pair.partition("=")
            env[name] = value
    return env


def _copied_sources(stage: Stage) -> list[str]:
    sources: list[str] = []
    for rest in stage.args("COPY"):
        words = [w for w in shlex.split(rest) if not w.startswith("--")]
        sources += words[:-1]
    return sources


def _packages(root: Path, include: list[str]) -> list[str]:
    """What setuptools' `packages.find` with these include patterns discovers under `root`."""
    found = [
        ".".join(init.parent.relative_to(root).parts) for init in sorted(root.rglob("__init__.py"))
    ]
    return [p for p in found if any(fnmatch.fnmatchcase(p, pattern) for pattern in include)]


def test_the_bot_runs_as_an_unprivileged_user() -> None:
    """The final stage switches to a named non-root user before the command runs."""
    final = _stages()[-1]
    users = final.args("USER")
    assert users, "the final stage never sets USER"
    assert users[-1] not in ("root", "0", "0:0")
    assert "useradd" in " ".join(final.args("RUN"))


def test_the_default_store_is_in_a_directory_that_user_owns() -> None:
    """The image's POWABOT_STORE is an SQLite file in a volume directory owned by the bot user."""
    final = _stages()[-1]
    store = _env(final)["POWABOT_STORE"]
    assert store.startswith("sqlite:////")
    directory = str(PurePosixPath(store.removeprefix("sqlite:///")).parent)
    user = final.args("USER")[-1]
    run = " ".join(final.args("RUN"))
    assert f"mkdir -p {directory}" in run
    assert f"chown {user}:{user} {directory}" in run or f"chown {user} {directory}" in run
    volumes = " ".join(final.args("VOLUME"))
    assert f'"{directory}"' in volumes or directory in volumes.split()
    assert directory != final.args("WORKDIR")[-1]  # not the root-owned code directory


def test_no_stand_in_or_tool_is_copied_into_any_stage() -> None:
    """Neither stage copies sandbox/, bench/ or tests/, and the build context leaves them out."""
    for stage in _stages():
        for source in _copied_sources(stage):
            top = source.strip("./").split("/")[0]
            assert top not in TOOLS, f"{stage.name} copies {source}"
            assert top not in ("", "*"), f"{stage.name} copies the whole context"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert set(TOOLS) <= set(ignored)


def test_the_wheel_built_in_the_image_holds_no_stand_ins(tmp_path: Path) -> None:
    """From exactly what the build stage copies, package discovery finds bot/ but no sandbox/."""
    build = next(s for s in _stages() if any("wheel" in r for r in s.args("RUN")))
    for source in _copied_sources(build):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, tmp_path / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, tmp_path / source)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = _packages(tmp_path, include)
    assert "bot" in packages and "bot.store" in packages and "provisioning" in packages
    assert not [p for p in packages if p.split(".")[0] in TOOLS]
