"""The README documents every command, option and exit code of ``rtrace`` (as sqlite-utils'
``test_docs.py`` does): a command or option added without its line in the README fails here.

Each command has a section headed ``### `rtrace COMMAND` `` under "Command reference"; every
option of the command (its long name, or its short one where it has only that) appears in that
section. The global options and exit codes appear once, in the reference's preamble.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from reasoning_trace.cli import cli
from reasoning_trace.cli.context import GLOBAL_OPTIONS

README = (Path(__file__).parent.parent / "README.md").read_text()
#: The query filters, shared by query, stats, export and tail: documented once.
FILTERS = (
    "--since",
    "--until",
    "--action",
    "--approved",
    "--rejected",
    "--voter",
    "--subject",
    "--node",
)


def commands(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    """Every command a user can run, by its full name (``keys show``)."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            found.update(commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def reference() -> str:
    """The README's "Command reference" section."""
    match = re.search(r"^## Command reference\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, "the README has no '## Command reference' section"
    return match.group(1)


def section(name: str) -> str:
    """The reference's section about ``rtrace NAME``."""
    text = reference()
    match = re.search(rf"^### `rtrace {re.escape(name)}`.*?\n(.*?)(?=^### |\Z)", text, re.M | re.S)
    assert match, f"no '### `rtrace {name}`' section in the README's command reference"
    return match.group(1)


def option_names(command: click.Command) -> list[str]:
    """The names a user types for each of the command's own options (the long one, else the
    short one; ``--approved/--rejected`` both)."""
    globals_ = {option for _, option, _ in GLOBAL_OPTIONS}
    names = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        every = [*param.opts, *param.secondary_opts]
        if set(every) & globals_ or "--help" in every:
            continue
        longs = [o for o in every if o.startswith("--")]
        names += longs or every[:1]
    return names


@pytest.mark.parametrize("name", sorted(commands(cli)))
def test_every_command_and_option_is_documented(name: str) -> None:
    """The command has help text and a README section naming each of its options."""
    command = commands(cli)[name]
    assert command.get_short_help_str(), f"rtrace {name} has no help text"
    text = section(name)
    named = option_names(command)
    if "[the query filters](#the-query-filters)" in text:  # documented once, in the preamble
        named = [o for o in named if o not in FILTERS]
    missing = [o for o in named if not re.search(rf"{re.escape(o)}(?![\w-])", text)]
    assert not missing, f"rtrace {name}: the README does not document {missing}"


def test_global_options_exit_codes_and_environment_are_documented() -> None:
    """The preamble names the global options, every exit code, the query filters and the
    environment."""
    preamble = reference().split("\n### ", 1)[0]
    for option in FILTERS:
        assert re.search(rf"{re.escape(option)}(?![\w-])", preamble), option
    for _, option, _ in GLOBAL_OPTIONS:
        assert option in preamble, option
    for code in ("0", "1", "2"):
        assert re.search(rf"^\| {code} \|", preamble, re.M), f"exit code {code}"
    for variable in ("REASONING_TRACE_DIR", "NO_COLOR"):
        assert variable in preamble, variable
    assert "--version" in preamble and "-h" in preamble


def test_no_section_names_a_command_that_does_not_exist() -> None:
    """Every command section of the README is about a command that exists."""
    named = re.findall(r"^### `rtrace ([a-z -]+?)`", reference(), re.M)
    assert named and set(named) <= set(commands(cli)), set(named) - set(commands(cli))
