"""`farmtel --help` and the help of every subcommand describe every option."""

from typing import Any

import typer.main

import cli
from tests.support.cli_inproc import invoke
from tests.support.procs import run_cli


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    # typer vendors click; walk its command tree without importing click itself.
    found = []
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        found.append((path, cmd))
        if hasattr(cmd, "commands"):
            found += _commands(cmd, path)
    return found


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(cli.app)
    commands = _commands(root)
    assert len(commands) >= 12
    for path, cmd in commands:
        assert cmd.help or cmd.short_help, f"farmtel {' '.join(path)} has no help"
        for param in cmd.params:
            if param.param_type_name == "option":
                assert param.help, f"farmtel {' '.join(path)} {param.opts[0]} has no help"


def test_help_runs_for_every_command() -> None:
    # In-process: a subprocess per command costs a second each.
    root = typer.main.get_command(cli.app)
    for path, _cmd in _commands(root):
        res = invoke([*path, "--help"])
        assert res.returncode == 0, (path, res.stderr)
        assert "Usage:" in res.stdout


def test_bad_cli_arguments_exit_2_with_a_message() -> None:
    res = run_cli(["query", "latest"])
    assert res.returncode == 2 and "--plantation" in res.stderr
    res = invoke(["query", "latest", "--plantation", "p", "--format", "xml"])
    assert res.returncode == 2 and "xml" in res.stderr
