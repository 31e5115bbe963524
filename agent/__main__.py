"""``python -m agent run --config gateway.toml``: the field agent without the rest of the CLI.

The same as ``farmtel agent run`` (same config, logs, exit codes: 2 for a bad config), but
it imports only what the agent needs. ``farmtel`` loads every subcommand first (typer,
click, the ingest and certification tools), which costs a gateway ~2 MiB of RSS for
nothing; deploy/systemd/farmtel-agent.service starts the agent this way.
"""

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent",
        description="The field agent that runs on a gateway (as `farmtel agent run`).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="Run the field agent: read the sensors, keep every reading in the outbox, publish.",
        description="Run the field agent: read the sensors, keep every reading in the outbox, "
        "publish.",
    )
    run.add_argument(
        "--config", "-c", type=Path, required=True, help="Path of the TOML config file."
    )
    args = parser.parse_args(argv)

    from agent.config import load_gateway_config
    from agent.service import Agent
    from contract import logs
    from contract.settings import ConfigError

    try:
        cfg = load_gateway_config(args.config)
        logs.configure(cfg.log)
        agent = Agent(cfg)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    agent.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
