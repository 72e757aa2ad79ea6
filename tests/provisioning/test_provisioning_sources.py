"""Local source discovery: files are hashed, and bad folders or files stop the run early."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bot.errors import ProvisioningError
from provisioning.sources import collect_sources
from provisioning.spec import DEFAULT_SPEC, Spec, load_spec


def test_collects_every_seed_file_with_its_hash(spec: Spec, seed_root: Path) -> None:
    """Each KB gets its folder's files, named by relative path, with the sha256 of the bytes."""
    found = collect_sources(spec)
    assert set(found) == {"billing-kb", "technical-kb", "product-kb"}
    billing = found["billing-kb"]
    expected = sorted(p.name for p in (seed_root / "seed-content/billing").glob("*.md"))
    assert [s.name for s in billing] == expected
    first = billing[0]
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert first.label == f"billing-kb/{first.name}"


def test_missing_source_folder_names_the_field(seed_root: Path) -> None:
    """A KB folder that does not exist is reported with the spec file and field."""
    (seed_root / "seed-content/product").rename(seed_root / "elsewhere")
    spec = load_spec(DEFAULT_SPEC, root=seed_root)
    with pytest.raises(ProvisioningError) as info:
        collect_sources(spec)
    assert (
        f"{DEFAULT_SPEC}: knowledge_bases[2].source_folder: seed-content/product does not exist"
        in str(info.value)
    )


def test_empty_and_unsupported_files_are_named(seed_root: Path) -> None:
    """Every empty or unsupported file is listed by path; hidden files are ignored."""
    empty = seed_root / "seed-content/billing/empty.md"
    empty.write_bytes(b"")
    image = seed_root / "seed-content/technical/diagram.png"
    image.write_bytes(b"\x89PNG")
    (seed_root / "seed-content/technical/.DS_Store").write_bytes(b"junk")
    spec = load_spec(DEFAULT_SPEC, root=seed_root)
    with pytest.raises(ProvisioningError) as info:
        collect_sources(spec)
    message = str(info.value)
    assert f"{empty}: file is empty" in message
    assert f"{image}: unsupported file type" in message
    assert ".DS_Store" not in message


def test_folder_without_files_is_an_error(seed_root: Path) -> None:
    """A KB with nothing to upload is reported rather than silently left empty."""
    for file in (seed_root / "seed-content/billing").iterdir():
        file.unlink()
    spec = load_spec(DEFAULT_SPEC, root=seed_root)
    with pytest.raises(ProvisioningError, match=r"knowledge_bases\[0\].source_folder: .*no files"):
        collect_sources(spec)
