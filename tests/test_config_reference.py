"""docs/configuration.md is generated from the models: regenerate it and compare, so the
reference cannot drift from the code (run `python -m contract.reference` to update it)."""

from __future__ import annotations

from pathlib import Path

from agent.config import GatewayConfig
from contract.reference import OUTPUT, main, render
from ingest.config import IngestConfig


def test_configuration_reference_is_up_to_date() -> None:
    assert OUTPUT.exists(), "docs/configuration.md is missing: python -m contract.reference"
    assert OUTPUT.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m contract.reference` and commit it"
    )


def test_every_section_key_is_documented() -> None:
    text = render()
    for root in (GatewayConfig, IngestConfig):
        for section, info in root.model_fields.items():
            model = info.annotation
            fields = getattr(model, "model_fields", None)
            if fields is None:
                continue
            for key in fields:
                row = next(
                    (line for line in text.splitlines() if line.startswith(f"| `{key}` |")), None
                )
                assert row is not None, f"[{section}] {key} is not in the reference"
                assert not row.rstrip().endswith("|  |"), f"[{section}] {key} has no docstring"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n")
    assert main(["--check", "--output", str(stale)]) == 1
    assert main(["--output", str(stale)]) == 0
    assert main(["--check", "--output", str(stale)]) == 0
    assert (
        "### [[alerts]]" in stale.read_text() and '#### driver = "text_line"' in stale.read_text()
    )
