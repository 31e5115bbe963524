"""`farmtel --help` and the help of every subcommand describe every option."""

import re
from typing import Any

import typer.main
from typer.testing import CliRunner

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


def _help(path: tuple[str, ...], width: int) -> str:
    res = CliRunner().invoke(
        cli.app, [*path, "--help"], env={"COLUMNS": str(width)}, terminal_width=width
    )
    assert res.exit_code == 0, (path, res.output)
    return res.stdout


def test_help_prints_every_help_text_as_written() -> None:
    # Rich markup took "[mqtt]" in "the [mqtt] and [influxdb] settings" for a tag and dropped
    # it, and kept a docstring's line breaks inside its paragraphs.
    root = typer.main.get_command(cli.app)
    for path, cmd in [((), root), *_commands(root)]:
        name = " ".join(("farmtel", *path))
        # So wide that nothing wraps: each paragraph must come out on one line.
        out = re.sub(r"[ \t]+", " ", _help(path, 1000))
        for text in [cmd.help or "", *(p.help or "" for p in cmd.params)]:
            for paragraph in text.split("\n\n"):
                line = " ".join(paragraph.split())
                sections = re.findall(r"\[[a-z_.]+\]", line)
                assert line in out, f"{name} --help: {sections or 'text'} lost in {line!r}"
        usage = next(line for line in out.splitlines() if "Usage:" in line)
        assert "{" not in usage, f"{name}: {usage}"


def test_command_lists_show_whole_summaries() -> None:
    # click cuts a summary to the width with "..."; wrapped, the whole of it fits in 80 columns.
    root = typer.main.get_command(cli.app)
    for path, group in [((), root), *_commands(root)]:
        if not hasattr(group, "commands"):
            continue
        out = "".join(_help(path, 80).split())
        for sub in group.commands.values():
            summary = (sub.help or "").split("\n\n")[0]
            assert "".join(summary.split()) in out, f"farmtel {' '.join(path)} cuts {summary!r}"


def test_arguments_read_as_upper_case_names_in_the_usage() -> None:
    for args, usage in ((["config", "check"], "config check [OPTIONS] FILE"),
                        (["verify"], "verify [OPTIONS] BUNDLE")):  # fmt: skip
        out = invoke([*args, "--help"]).stdout
        assert next(line for line in out.splitlines() if "Usage:" in line).strip().endswith(usage)


def test_report_ranges_show_their_default_since() -> None:
    for command, default in (("summary", "24h"), ("gaps", "7d")):
        out = _help(("query", command), 1000)
        since = next(line for line in out.splitlines() if "--since" in line)
        assert f"(default: {default})" in since, (command, out)
