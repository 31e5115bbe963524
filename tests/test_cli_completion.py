"""Shell completion (typer/click): the script for bash, and completions through it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FARMTEL = Path(sys.executable).with_name("farmtel")


def _farmtel(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    if not FARMTEL.exists():
        pytest.skip(f"{FARMTEL} is missing: pip install -e . creates the farmtel command")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("FARMTEL_", "_FARMTEL"))}
    full.update(env or {})
    return subprocess.run(
        [str(FARMTEL), *args], capture_output=True, text=True, timeout=60, env=full
    )


def test_show_completion_prints_a_bash_script() -> None:
    res = _farmtel(["--show-completion", "bash"])
    assert res.returncode == 0, res.stderr
    assert "complete -o default -F _farmtel_completion farmtel" in res.stdout
    assert "_FARMTEL_COMPLETE=complete_bash" in res.stdout


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("farmtel query ", 2, {"latest", "history", "summary", "gaps"}),
        ("farmtel status --for", 2, {"--format"}),
    ],
)
def test_completions_through_the_bash_protocol(words: str, cword: int, expected: set[str]) -> None:
    res = _farmtel(
        [],
        env={"_FARMTEL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)},
    )
    assert res.returncode == 0, res.stderr
    assert expected <= set(res.stdout.split()), res.stdout
