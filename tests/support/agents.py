"""An in-process agent for tests: a config with one sensor on a port that does not exist."""

from pathlib import Path
from typing import Any

from agent.config import parse_gateway_config
from agent.service import Agent


def make_agent(
    tmp_path: Path, plantation: str = "p-1", gateway: str = "gw-1", **tables: Any
) -> Agent:
    """``Agent`` with its state in ``tmp_path``; ``tables`` are more config tables
    (``outbox={...}``, ``mqtt={...}``). Its port workers are never started by these tests."""
    raw: dict[str, Any] = {
        "gateway": {"plantation": plantation, "id": gateway, "state_dir": str(tmp_path)},
        "sensors": [
            {
                "id": "s-1",
                "field": "f",
                "driver": "text_line",
                "port": str(tmp_path / "none"),
                "columns": ["temp_c"],
            }
        ],
        **tables,
    }
    return Agent(parse_gateway_config(raw, "test", environ={}))
