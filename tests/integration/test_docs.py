"""The documentation site builds with no broken link or missing page, its command reference is
the parser's own, and the command blocks marked `<!-- doc-test -->` run, in order, in a fresh
folder, so the tutorial cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, tool_env

pytestmark = pytest.mark.slow

MARK = "<!-- doc-test -->"
BLOCK = re.compile(r"(?m)^" + re.escape(MARK) + r"[ \t]*\n```(?:bash|sh)\n(.*?)\n```", re.S)
LINE = re.compile(r"(?m)^" + re.escape(MARK) + r"[ \t]*$")
MKDOCS = str(Path(sys.executable).with_name("mkdocs"))


def marked_blocks(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert len(blocks) == len(LINE.findall(text)), f"{page}: a {MARK} line not followed by a" \
        " bash block"
    return blocks


def test_the_site_builds_strict_and_lists_every_command(tmp_path: Path):
    res = subprocess.run([MKDOCS, "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=REPO, capture_output=True, text=True,
                         env=tool_env(NO_MKDOCS_2_WARNING="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    page = (tmp_path / "site" / "reference" / "commands" / "index.html").read_text()
    from mlops_nb.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in sub.choices:
        assert f"mlops-nb {name}" in page, name
    assert "mlops-nb ci run" in page and "--base" in page


@pytest.mark.parametrize("page", sorted(p.relative_to(REPO).as_posix()
                                         for p in (REPO / "docs").rglob("*.md")
                                         if LINE.search(p.read_text(encoding="utf-8"))))
def test_marked_command_blocks_run_in_order(page: str, tmp_path: Path):
    script = "set -euo pipefail\n" + "\n".join(marked_blocks(REPO / page)) + "\n"
    res = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env=tool_env(), timeout=900)
    assert res.returncode == 0, f"{page}:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
