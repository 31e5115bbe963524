"""InfluxQL injection through every CLI filter: no statement other than the intended read runs.

Every command that talks to InfluxDB (found by walking the CLI: those with a ``--url``
option) is run with hostile text in each of its text options. A recording proxy between
the CLI and the real InfluxDB sees every ``/query``; each must be one SELECT/SHOW statement
whose text, outside its string literals and quoted identifiers, holds no ``;`` and no
write or admin keyword. Afterwards the database still holds all its measurements and
points, and a canary database still exists.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from cli import app
from devstack import StackInfo
from ingest.devices import BrokerAddress, add_gateway
from ingest.influx import InfluxQuery, InfluxSettings, V1Writer
from ingest.mapping import batch_to_lines
from ingest.registry import Registry
from tests.security.batches import make_batch
from tests.security.query_proxy import QueryRecorder

PLANTATION = "plant-x"
NOT_FILTERS = {"--url", "--format"}
_STRINGS = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_FORBIDDEN = re.compile(
    r"\b(DROP|DELETE|CREATE|ALTER|GRANT|REVOKE|KILL|INTO|SET\s+PASSWORD)\b", re.IGNORECASE
)


def _hostile(canary: str) -> list[str]:
    """One value per way out of a query: a string literal, a quoted identifier, a line
    break, InfluxQL's regex/parameter/escape syntax, and a statement as plain text."""
    return [
        f"x' OR 1=1; DROP DATABASE {canary} --",
        f'x" OR "a"="a"; DROP DATABASE "{canary}"',
        f"plant-x\nDROP DATABASE {canary}",
        "/.*/ $plantation soil\\",
        "DROP SERIES FROM soil",
    ]


def _one_read_statement(q: str) -> str | None:
    """None when ``q`` is a single SELECT/SHOW; else what is wrong with it."""
    bare = _STRINGS.sub("''", q)
    if not re.match(r"\s*(SELECT|SHOW)\b", bare, re.IGNORECASE):
        return "does not start with SELECT or SHOW"
    if ";" in bare.strip().rstrip(";"):
        return "holds more than one statement"
    m = _FORBIDDEN.search(bare)
    if m:
        return f"holds {m.group(1)} outside a string"
    if "\n" in bare:
        return "holds a line break outside a string"
    return None


def _influx_commands() -> Iterator[tuple[list[str], Any]]:
    """Every CLI command with a --url option (typer vendors click: walked by duck typing)."""
    root = typer.main.get_command(app)

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
        elif any("--url" in getattr(p, "opts", []) for p in cmd.params):
            yield path, cmd

    yield from walk(root, [])


def _filters(cmd: Any) -> list[str]:
    out = []
    for p in cmd.params:
        descriptor = getattr(p, "type_descriptor", None)
        if descriptor is not None and descriptor.annotation is str:
            name = max(p.opts, key=len)
            if name not in NOT_FILTERS:
                out.append(name)
    return out


def _required(cmd: Any, tmp: Path, extras: dict[str, str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for p in cmd.params:
        if getattr(p, "opts", None) and p.required:
            name = max(p.opts, key=len)
            args[name] = extras.get(name, "x")
    if any("--registry" in getattr(p, "opts", []) for p in cmd.params):
        args["--registry"] = extras["--registry"]
    return args


def _snapshot(q: InfluxQuery, canary: str) -> dict[str, Any]:
    names = sorted(v[0] for s in q.query("SHOW MEASUREMENTS") for v in s.values)
    count = q.query('SELECT count("moisture_pct") FROM "soil"')[0].values[0][1]
    dbs = sorted(v[0] for s in q.query("SHOW DATABASES") for v in s.values)
    return {"measurements": names, "soil": count, "canary": canary in dbs}


def test_no_cli_filter_can_inject_influxql(
    stack: StackInfo, influx_db: str, tmp_path: Path
) -> None:
    settings = InfluxSettings(url=stack.influx_url, database=influx_db)
    writer = V1Writer(settings)
    lines = batch_to_lines(PLANTATION, make_batch("gw-1", "soil-1", 20))
    writer.write("\n".join(lines).encode())
    q = InfluxQuery(settings)
    canary = f"{influx_db}_canary"
    q.create_database(canary)
    with Registry(tmp_path / "registry.sqlite") as reg:
        add_gateway(reg, PLANTATION, "gw-1", tmp_path / "bundle", broker=BrokerAddress())
    key = tmp_path / "org.key"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    before = _snapshot(q, canary)
    assert before["canary"] and before["soil"] == 20
    recorder = QueryRecorder(stack.influx_url).start()
    runner = CliRunner()
    runs = 0
    baseline_queries = 0
    outcomes: dict[str, int] = {}
    crashes: list[str] = []
    exit1: list[str] = []
    try:
        commands = list(_influx_commands())
        names = {" ".join(p) for p, _ in commands}
        assert {"query latest", "query history"} <= names, names
        for path, cmd in commands:
            filters = _filters(cmd)
            assert "--plantation" in filters or path == ["status"], (path, filters)
            for target in [None, *filters]:
                for value in [None] if target is None else _hostile(canary):
                    extras = {
                        "--plantation": PLANTATION,
                        "--from": "2020-01-01",
                        "--to": "2035-01-01",
                        "--out": str(tmp_path / f"out-{runs}"),
                        "--key": str(key),
                        "--registry": str(tmp_path / "registry.sqlite"),
                    }
                    args = _required(cmd, tmp_path, extras)
                    args.setdefault("--database", influx_db)
                    if target is not None:
                        assert value is not None
                        args[target] = value
                    argv = [*path]
                    for k, v in args.items():
                        argv += [k, v]
                    argv += ["--url", recorder.url]
                    result = runner.invoke(app, argv)
                    runs += 1
                    if result.exception is not None and not isinstance(
                        result.exception, SystemExit
                    ):
                        # Other commands' own bugs are reported, not ours to fail on; the
                        # queries they sent are checked all the same.
                        crashes.append(f"{' '.join(path)} {target}: {result.exception!r}")
                    key = f"{result.exit_code}"
                    outcomes[key] = outcomes.get(key, 0) + 1
                    if result.exit_code == 1:
                        exit1.append(f"{' '.join(path)} {target}: {result.output.strip()[:120]}")
                    for text, params in recorder.take():
                        if target is None:
                            baseline_queries += 1
                        problem = _one_read_statement(text)
                        assert problem is None, f"{argv}: query {text!r} {problem}"
                        if value is not None and any(c in value for c in "'\";\n"):
                            assert value not in text or value in params, (argv, text)
    finally:
        recorder.stop()
    time.sleep(0.1)
    after = _snapshot(q, canary)
    q.drop_database(canary)
    assert after == before
    assert baseline_queries > 0, "the recorder saw no query: the test would prove nothing"
    assert runs > 100
    assert not [c for c in crashes if c.startswith("query ")], crashes
    if crashes:
        print(f"commands that crashed (not an injection): {sorted(set(crashes))[:5]}")
    print(f"injection runs={runs} outcomes={outcomes} baseline_queries={baseline_queries}")
    print("exit 1:", *sorted(set(exit1)), sep="\n  ")
