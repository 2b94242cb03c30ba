"""MkDocs hook: pages that are generated from the code, so they cannot drift from it.

`<!-- commands -->` in a page becomes the reference of every `mlops-nb` command and option,
rendered from the argument parser the command itself uses.
"""

from __future__ import annotations

import argparse
from typing import Any

MARK = "<!-- commands -->"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.append((name, child))
    return found


def _options(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) \
                or action.help == argparse.SUPPRESS or action.dest in ("verbose", "project"):
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.metavar or action.dest}`"
        text = (action.help or "").replace("|", "\\|").replace("\n", " ")
        if action.default not in (None, False, argparse.SUPPRESS, []) and "default" not in text:
            text += f" (default: `{action.default}`)"
        rows.append(f"| {names} | {text} |")
    return rows


def _render(parser: argparse.ArgumentParser, path: list[str], out: list[str]) -> None:
    for name, child in _subcommands(parser):
        words = [*path, name]
        nested = _subcommands(child)
        out.append(f"{'#' * min(2 + len(path), 4)} mlops-nb {' '.join(words)}\n")
        out.append("```text\n" + child.format_usage().strip() + "\n```\n")
        if child.description:
            out.append(child.description.strip() + "\n")
        rows = _options(child)
        if rows:
            out += ["| argument | meaning |", "|---|---|", *rows, ""]
        if nested:
            _render(child, words, out)


def commands() -> str:
    from mlops_nb.cli import build_parser

    parser = build_parser()
    parser.prog = "mlops-nb"
    out: list[str] = []
    _render(parser, [], out)
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARK in markdown:
        markdown = markdown.replace(MARK, commands())
    return markdown
