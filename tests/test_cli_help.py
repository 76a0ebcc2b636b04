"""The help of the ``hyperdb`` command, in process: ``hyperdb.cli.main(argv)`` prints it (argparse
ends with ``SystemExit(0)``). The commands are taken from the parser itself, so a new subcommand is
covered the day it is added. (``tests/test_cli.py`` runs ``hyperdb --help`` once as a subprocess:
the installed script.)"""

from __future__ import annotations

import argparse

import pytest

from hyperdb.cli import EXIT_CODES, build_parser, main


def subcommands() -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The parser's one subparsers action: ``choices`` maps each command to its parser."""
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


COMMANDS = sorted(subcommands().choices)


def flat(text: str) -> str:
    """Whitespace-insensitive text: argparse rewraps descriptions to the terminal's width."""
    return " ".join(text.split())


def test_the_commands_come_from_the_parser() -> None:
    expected = {"init", "put", "get", "del", "ls", "range", "history", "heads", "version", "diff"}
    expected |= {"authorize", "writers", "verify", "graph", "serve", "sync", "demo", "clone"}
    assert expected <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_prints_its_usage_and_description(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"usage: hyperdb {name}")
    description = subcommands().choices[name].description
    assert description, f"hyperdb {name} has no description"
    assert flat(description) in flat(out)
    assert "options:" in out


def test_the_top_level_help_lists_every_command_and_the_exit_codes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hyperdb")
    summaries = {action.dest: action.help for action in subcommands()._choices_actions}
    for name in COMMANDS:
        summary = summaries.get(name)
        assert summary, f"hyperdb {name} has no one-line summary"
        assert flat(f"{name} {summary}") in flat(out), name
    assert "exit codes:" in out
    for code, meaning in EXIT_CODES.items():
        assert f"{code:<4} {meaning}" in out


def test_no_command_prints_the_help_and_means_bad_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert capsys.readouterr().out.startswith("usage: hyperdb")
