"""Local source files: find them in each KB's folder, hash them, and reject bad ones early.

Everything here runs before the first API call, so a missing folder or an empty file stops the
command before anything has been created.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ProvisioningError
from provisioning.spec import Spec

# File types Powabase extracts (see the upload row of the API notes).
ALLOWED_SUFFIXES = frozenset({".md", ".txt", ".pdf", ".docx"})

CONTENT_TYPES = {
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".pdf": "application/pdf",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}


@dataclass(frozen=True)
class LocalSource:
    """One file to upload; ``name`` (its posix path inside the KB folder) names the source."""

    knowledge_base: str
    path: Path
    name: str
    sha256: str
    size: int

    @property
    def label(self) -> str:
        return f"{self.knowledge_base}/{self.name}"

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES.get(self.path.suffix.lower(), "application/octet-stream")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def collect_sources(spec: Spec) -> dict[str, list[LocalSource]]:
    """Every KB's files, sorted by name; raise one ProvisioningError naming each bad file/folder."""
    problems: list[str] = []
    found: dict[str, list[LocalSource]] = {}
    for i, kb in enumerate(spec.knowledge_bases):
        field = f"{spec.path}: knowledge_bases[{i}].source_folder"
        folder = spec.resolve(kb.source_folder)
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            problems.append(f"{field}: {kb.source_folder} {what} (looked at {folder})")
            continue
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        sources: list[LocalSource] = []
        for file in files:
            shown = file.relative_to(folder).as_posix()
            if file.suffix.lower() not in ALLOWED_SUFFIXES:
                allowed = " ".join(sorted(ALLOWED_SUFFIXES))
                problems.append(f"{file}: unsupported file type (allowed: {allowed}) ({field})")
                continue
            size = file.stat().st_size
            if size == 0:
                problems.append(f"{file}: file is empty ({field})")
                continue
            sources.append(LocalSource(kb.name, file, shown, sha256_of(file), size))
        if not files:
            problems.append(f"{field}: {kb.source_folder} holds no files (looked at {folder})")
        found[kb.name] = sources
    if problems:
        raise ProvisioningError(
            "bad source files:\n" + "\n".join(f"  - {problem}" for problem in problems)
        )
    return found
