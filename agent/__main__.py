"""``python -m agent run --config gateway.toml``: the field agent without the rest of the CLI.

The same as ``farmtel agent run`` (same config, logs, exit codes: 2 for a bad config), but
it imports only what the agent needs. ``farmtel`` loads every subcommand first (typer,
click, the ingest and certification tools), which costs a gateway ~2 MiB of RSS for
nothing; deploy/systemd/farmtel-agent.service starts the agent this way.

It also keeps OpenSSL (libcrypto + libssl, ~4 MiB of RSS) out of a gateway that does not
use TLS: paho imports ``ssl`` and ``hashlib`` whether or not TLS is configured, and
pydantic imports ``hashlib`` (through ``secrets``). While the agent's modules are imported,
``_hashlib`` is blocked, so hashlib and hmac use Python's own implementations (md5, sha1,
sha2, sha3, blake2: all the agent and paho use), and ``_ssl`` is blocked unless ``[mqtt]
tls`` is on, so paho imports without TLS support, which such a config never asks for
(paho 2.x still names ``ssl.SSLWantReadError`` in the except clauses of its socket reads
and writes, so it gets :class:`_NoTLS`, whose exceptions nothing raises, in place of the
``None`` it would keep). The blocks are lifted once the agent is built. Batch signatures
need neither: cryptography carries its own OpenSSL and is loaded only with a signing key.
"""

import argparse
import sys
from pathlib import Path

_BLOCKED = ("_hashlib", "_ssl")
"""OpenSSL's modules, kept out while the agent imports (module docstring)."""


class _NoTLS:
    """What paho's socket code looks up in ``ssl`` on a connection without TLS: its except
    clauses name these whether or not TLS is on (with ``ssl = None`` the first EAGAIN on
    the socket raised AttributeError and ended paho's network thread). Never raised."""

    class SSLWantReadError(OSError):
        pass

    class SSLWantWriteError(OSError):
        pass

    class CertificateError(ValueError):
        pass


def _paho_without_tls() -> None:
    """Give paho, imported while ``_ssl`` was blocked, :class:`_NoTLS` for its ``ssl``."""
    import paho.mqtt.client as paho_client

    namespace = vars(paho_client)
    if "ssl" in namespace and namespace["ssl"] is None:
        namespace["ssl"] = _NoTLS


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

    blocked = [name for name in _BLOCKED if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        from agent.config import load_gateway_config
        from contract import logs
        from contract.settings import ConfigError

        try:
            cfg = load_gateway_config(args.config)
            if cfg.mqtt.tls and "_ssl" in blocked:
                del sys.modules["_ssl"]
                blocked.remove("_ssl")
            from agent.service import Agent

            if "_ssl" in blocked:
                _paho_without_tls()
            logs.configure(cfg.log)
            agent = Agent(cfg)
        except ConfigError as err:
            print(err, file=sys.stderr)
            return 2
    finally:
        for name in blocked:
            if sys.modules.get(name, ...) is None:
                del sys.modules[name]
    agent.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
