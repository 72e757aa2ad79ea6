"""The spec loader: the checked-in spec is valid, and bad specs name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ProvisioningError
from provisioning.spec import DEFAULT_SPEC, REPO_ROOT, load_spec

MINIMAL = """
[[knowledge_bases]]
name = "billing-kb"
source_folder = "docs/billing"

[[agents]]
name = "billing-agent"
model = "gpt-5.4-mini"
system_prompt = "Search the KB."
knowledge_base = "{kb}"

[orchestration]
name = "Team"
description = "Support."
[[orchestration.entities]]
agent = "{agent}"
role_description = "Billing questions."
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_checked_in_spec_describes_the_support_team() -> None:
    """The spec in provisioning/ loads and names the three KBs, agents and entities."""
    spec = load_spec()
    assert [kb.name for kb in spec.knowledge_bases] == ["billing-kb", "technical-kb", "product-kb"]
    assert [a.name for a in spec.agents] == ["billing-agent", "technical-agent", "product-agent"]
    assert {a.model for a in spec.agents} == {"gpt-5.4-mini"}
    assert [e.agent for e in spec.orchestration.entities] == [a.name for a in spec.agents]
    assert spec.orchestration.strategy == "supervisor"
    assert spec.orchestration.orchestrator_config["additional_instructions"]
    billing = spec.resolve(spec.knowledge_bases[0].source_folder)  # next to the spec: packaged
    assert billing == DEFAULT_SPEC.parent / "seed-content/billing"
    assert billing.resolve() == REPO_ROOT / "seed-content/billing"  # the checkout's one copy
    assert spec.path == DEFAULT_SPEC


def test_minimal_spec_gets_defaults(tmp_path: Path) -> None:
    """Indexing strategy and embedding model default to the backend's defaults."""
    spec = load_spec(write(tmp_path, MINIMAL.format(kb="billing-kb", agent="billing-agent")))
    assert spec.knowledge_bases[0].indexing_strategy == "chunk_embed"
    assert spec.knowledge_bases[0].embedding_model == "text-embedding-3-small"


def test_unknown_kb_referenced_by_agent_names_file_and_field(tmp_path: Path) -> None:
    """An agent pointing at a KB the spec does not define is reported with file and field."""
    path = write(tmp_path, MINIMAL.format(kb="billing", agent="billing-agent"))
    with pytest.raises(ProvisioningError) as info:
        load_spec(path)
    message = str(info.value)
    assert f"{path}: agents[0].knowledge_base: unknown knowledge base 'billing'" in message
    assert "billing-kb" in message


def test_unknown_entity_agent_is_reported(tmp_path: Path) -> None:
    """An entity naming an agent the spec lacks is reported with its field path."""
    path = write(tmp_path, MINIMAL.format(kb="billing-kb", agent="biling-agent"))
    with pytest.raises(ProvisioningError, match=r"orchestration\.entities\[0\]\.agent: unknown"):
        load_spec(path)


def test_pydantic_failures_list_every_field(tmp_path: Path) -> None:
    """Schema problems (bad enum, missing field, unknown key) are all listed with field paths."""
    text = MINIMAL.format(kb="billing-kb", agent="billing-agent")
    text = text.replace('source_folder = "docs/billing"', 'indexing_strategy = "magic"\nsizee = 1')
    path = write(tmp_path, text)
    with pytest.raises(ProvisioningError) as info:
        load_spec(path)
    message = str(info.value)
    assert f"{path}: knowledge_bases[0].indexing_strategy" in message
    assert f"{path}: knowledge_bases[0].source_folder: Field required" in message
    assert f"{path}: knowledge_bases[0].sizee: Extra inputs are not permitted" in message


def test_blank_system_prompt_is_rejected(tmp_path: Path) -> None:
    """A whitespace-only prompt is not a prompt."""
    text = MINIMAL.format(kb="billing-kb", agent="billing-agent").replace(
        '"Search the KB."', '"   "'
    )
    with pytest.raises(ProvisioningError, match=r"agents\[0\]\.system_prompt"):
        load_spec(write(tmp_path, text))


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    """Unreadable or malformed spec files are reported with their path."""
    broken = write(tmp_path, "[[agents]\nname=")
    with pytest.raises(ProvisioningError, match=f"{broken}: not valid TOML"):
        load_spec(broken)
    missing = tmp_path / "nope.toml"
    with pytest.raises(ProvisioningError, match=f"{missing}: cannot read spec file"):
        load_spec(missing)
