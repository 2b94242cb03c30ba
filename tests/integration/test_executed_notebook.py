"""Steps run as Jupyter runs them, on every path (issue 11, items 4-7).

A golden comparison: one step full of the cases (streams around displays, a result, `%time`,
Markdown and HTML displays, a DataFrame, `__name__`, a DeprecationWarning) runs under
papermill's kernel, the fast path of `mlops-nb run`, a DVC stage without and with the warm
worker; the executed notebooks must record the same outputs, timestamps aside.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import cli, git_project, make_nb, sh

pytestmark = pytest.mark.slow

CASES = [
    (["imports"], "import warnings\n\nimport pandas as pd\n"
                  "from IPython.display import HTML, Markdown, display"),
    (["step:show"], "print('before')\ndisplay(Markdown('**bold**'))\nprint('after')\n1 + 1"),
    ([], "%time total = sum(range(10))\ndisplay(HTML('<b>html</b>'))\ntotal"),
    ([], "if __name__ == '__main__':\n    print('run as __main__')\n__name__"),
    ([], "def old():\n    warnings.warn('old() is deprecated', DeprecationWarning)\n\n"
         "old()\nprint('warned')"),
    ([], "frame = pd.DataFrame({'a': [1, 2]})\nframe"),
    ([], "display(Markdown('one'), Markdown('two'))\nresult = total * 2"),
]


def _normal(out: dict) -> dict:
    """An output with what legitimately differs between runs removed (times, file names)."""
    out = {k: v for k, v in out.items() if k not in ("metadata", "transient")}
    if "text" in out:
        text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
        text = re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?\s*(ns|[µμ]s|us|ms|s)\b", "T", text)  # 1e+03 ns
        text = re.sub(r"(?m)^.*:\d+: (\w+Warning: )", r"\1", text)
        text = re.sub(r"(?m)^\s+warnings\.warn\(.*\n", "", text)
        out["text"] = text
    if "data" in out:
        out["data"] = {k: "".join(v) if isinstance(v, list) else v
                       for k, v in out["data"].items()}
    return out


def outputs_of(path: Path) -> list[tuple]:
    doc = json.loads(path.read_text())
    return [(c.get("execution_count"), [_normal(o) for o in c.get("outputs", [])])
            for c in doc["cells"] if c["cell_type"] == "code"]


def test_every_engine_records_what_papermill_records(tmp_path):
    root = tmp_path / "cases"
    make_nb(root / "notebooks/cases.ipynb", CASES)
    git_project(root)
    executed = root / "outputs/show/show.ipynb"
    env = {"PYTHONWARNINGS": ""}  # Python's default filters, as a user has them
    sh(["mlops-nb", "run", "--engine", "papermill"], root, **env)
    want = outputs_of(executed)
    shutil.copy(executed, tmp_path / "papermill.ipynb")
    by_engine = {}
    sh(["mlops-nb", "run", "-f"], root, **env)
    by_engine["fast"] = outputs_of(executed)
    sh(["python", "-m", "mlops_nb.step", "show"], root, MLOPS_NB_WORKER="0", **env)
    by_engine["dvc stage"] = outputs_of(executed)
    sh(["python", "-m", "mlops_nb.step", "show"], root, **env)  # starts the warm worker
    sh(["python", "-m", "mlops_nb.step", "show"], root, **env)  # handed to it
    by_engine["warm worker"] = outputs_of(executed)
    cells = {c[1][0]["text"] if c[1] and "text" in c[1][0] else "" for c in want}
    assert "before\n" in cells and "run as __main__\n" in cells  # the cases did run
    for engine, got in by_engine.items():
        assert got == want, engine
    assert any(o.get("data", {}).get("text/markdown") == "**bold**"
               for _, outs in want for o in outs)
    assert any("DeprecationWarning: old() is deprecated" in o.get("text", "")
               for _, outs in want for o in outs)
    assert any(o.get("data", {}).get("text/plain") == "'__main__'"
               for _, outs in want for o in outs)


def test_a_failing_cell_is_named_by_its_first_line_and_v_shows_its_traceback(tmp_path):
    root = tmp_path / "fails"
    make_nb(root / "notebooks/fails.ipynb", [
        (["step:boom"], "x = 1"),
        ([], "# the division\nratio = x / 0"),
    ])
    git_project(root)
    res = cli(["run"], root, check=False)
    assert res.returncode == 5
    assert "notebooks/fails.ipynb cell 2 (`# the division`): ZeroDivisionError" in res.stderr
    res = cli(["-v", "run"], root, check=False)
    assert "ratio = x / 0" in res.stderr and "ZeroDivisionError" in res.stderr
    assert "mlops_nb/" not in res.stderr and "site-packages" not in res.stderr
