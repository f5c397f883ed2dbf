"""Every command, subcommand and option of `trustmesh` explains itself in --help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from trustmesh.cli import build_parser

ROOT = Path(__file__).resolve().parents[3]


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str, str | None]]:
    """(command path, what, its help text) for every argument and subcommand under ``parser``."""
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield path, f"subcommand {name}", helps.get(name)
                yield from _walk(sub, (*path, name))
        else:
            yield path, f"argument {'/'.join(action.option_strings) or action.dest}", action.help


def test_every_subcommand_and_argument_has_help_text():
    walked = list(_walk(build_parser(), ("trustmesh",)))
    assert len(walked) > 100  # the walk reached the nested commands
    missing = [f"{' '.join(path)}: {what}" for path, what, text in walked
               if not text or text == argparse.SUPPRESS or not text.strip()]
    assert missing == []


def _help(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "trustmesh", *args, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_top_level_help_describes_the_product_not_the_module():
    text = _help()
    assert "argument parsing only" not in text
    assert "SPIFFE identity" in text and "trustmesh demo" in text


def test_ca_init_and_rotate_help_name_what_each_option_and_step_does():
    init = _help("ca", "init")
    assert "the trust domain the CA signs for" in init
    assert "the CA directory" in init
    rotate = _help("ca", "rotate")
    for step in ("prepare", "activate", "taint"):
        assert any(line.split()[:1] == [step] and len(line.split()) > 2 for line in rotate.splitlines()), rotate
    assert "--force" in _help("ca", "rotate", "taint")
