"""Run real agents (agent.service.Agent) on pre-filled outboxes, without their sensors.

``python bench/agent_runner.py GATEWAY_TOML [GATEWAY_TOML ...]``: one agent per config, all
in this process (a bench of 200 gateways needs no 200 interpreters on a 2-core box). Each
config must name one [[sensors]] entry (the loader insists on one); it is dropped here, so
an agent only sends what its outbox holds. Everything else (outbox, publisher, receipts,
resends) is the production code. SIGTERM or SIGINT stops them all.
"""

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if p != str(ROOT)]

from agent.config import load_gateway_config  # noqa: E402
from agent.service import Agent  # noqa: E402
from contract import logs  # noqa: E402


def main() -> None:
    configs = [load_gateway_config(Path(arg)) for arg in sys.argv[1:]]
    if not configs:
        sys.exit("usage: agent_runner.py GATEWAY_TOML [GATEWAY_TOML ...]")
    logs.configure(configs[0].log)
    agents = [Agent(cfg.model_copy(update={"sensors": []})) for cfg in configs]
    stop = threading.Event()

    def _stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for agent in agents:
        agent.start()
    stop.wait()
    for agent in agents:
        agent.stop_event.set()
        agent.wake.set()
    for agent in agents:
        agent.stop()


if __name__ == "__main__":
    main()
