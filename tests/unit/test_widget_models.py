"""Pure parts of the widgets: parameter forms and grids, the pipeline graph's layout and
states, progress lines, the text/HTML tables, and which saved files compile on save."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlops_nb.errors import UsageError
from mlops_nb.execute.run import CHANGED, NEVER_RUN, UP_TO_DATE
from mlops_nb.pipeline.spec import PipelineSpec, StepSpec
from mlops_nb.widgets import parameters as par
from mlops_nb.widgets import pipeline as pipe
from mlops_nb.widgets.render import html_table, text_table
from mlops_nb.widgets.server_ext import compile_saved, project_of
from tests.conftest import make_nb


def test_fields_get_fitting_controls() -> None:
    data = {"iris": {"N": 100, "RATE": 0.5, "ON": False, "NAME": "rf", "LAYERS": [1, 2]},
            "other": {"CRIT": "gini"}}
    fields = par.fields(data, {"other.CRIT": ["gini", "entropy"]})
    assert [(f.key, f.kind) for f in fields] == [
        ("iris.N", "int"), ("iris.RATE", "float"), ("iris.ON", "bool"), ("iris.NAME", "text"),
        ("iris.LAYERS", "text"), ("other.CRIT", "choice")]
    by = {f.key: f for f in fields}
    assert par.parse_value(by["iris.N"], " 7 ") == 7
    assert par.parse_value(by["iris.ON"], "true") is True
    assert par.parse_value(by["iris.LAYERS"], "[3, 4]") == [3, 4]
    assert par.parse_value(by["other.CRIT"], "entropy") == "entropy"
    with pytest.raises(UsageError, match=r"iris.N: 'x' is not a int"):
        par.parse_value(by["iris.N"], "x")
    with pytest.raises(UsageError, match="not one of gini, entropy"):
        par.parse_value(by["other.CRIT"], "log")
    assert par.parse_values(by["iris.RATE"], "0.1, 0.2") == [0.1, 0.2]
    assert par.parse_values(by["iris.RATE"], " ") == [0.5]


def test_grid_is_the_product_of_changed_values() -> None:
    fields = par.fields({"g": {"A": 1, "B": True}})
    points = par.grid(fields, {"g.A": [1, 2], "g.B": [True, False]})
    assert points == [{}, {"g.B": False}, {"g.A": 2}, {"g.A": 2, "g.B": False}]
    assert par.set_args({"g.A": 2, "g.B": False, "g.S": "4"}) == [
        "-S", "g.A=2", "-S", "g.B=false", "-S", 'g.S="4"']
    assert par.queue_command({"g.A": 2})[-4:] == ["run", "--queue", "-S", "g.A=2"]
    with pytest.raises(UsageError, match="no parameter g.Z"):
        par.grid(fields, {"g.Z": [1]})
    with pytest.raises(UsageError, match="at most 64"):
        par.grid(par.fields({"g": {"A": 0, "B": 0}}), {"g.A": range(9), "g.B": range(9)})
    assert par.started_experiment("Reproducing experiment 'hilly-roup'") == "hilly-roup"
    assert par.started_experiment("Running stage 'load':") is None


def _step(name: str, *upstream: str) -> StepSpec:
    return StepSpec(name=name, notebook="n.ipynb", cells=(), inputs=(), outputs=(), params=(),
                    upstream=upstream, data_deps=(), metrics=(), copied_defs=())


def test_graph_layout_branches_and_stale_downstream() -> None:
    spec = PipelineSpec((), (_step("load"), _step("a", "load"), _step("b", "load"),
                             _step("join", "a", "b"), _step("report", "join")))
    states = {"load": (UP_TO_DATE, ""), "a": (CHANGED, "code changed"), "b": (UP_TO_DATE, ""),
              "join": (UP_TO_DATE, "")}
    nodes = {n.step: n for n in pipe.nodes_of(spec, states, {"a": "outputs/a/a.ipynb"})}
    assert [(nodes[s].column, nodes[s].row) for s in ("load", "a", "b", "join", "report")] == \
        [(0, 0), (1, 0), (1, 1), (2, 0), (3, 0)]
    assert nodes["join"].state == pipe.STALE and "a must run first" in nodes["join"].reason
    assert nodes["b"].state == UP_TO_DATE and nodes["report"].state == NEVER_RUN
    moved = pipe.advance(list(nodes.values()), "a", pipe.RUNNING)
    assert [n.state for n in moved if n.step == "a"] == [pipe.RUNNING]
    assert pipe.progress("train: running") == ("train", "running")
    assert pipe.progress("ran 2, up to date 1") is None
    text = pipe.text(list(nodes.values()))
    assert "join" in text and "stale (a must run first)" in text
    svg = pipe.svg(list(nodes.values()))
    assert svg.count("<rect") == 5 and svg.count("marker-end") == 5
    assert " C" not in svg  # no edge skips a column here: all straight
    chain = pipe.layout([pipe.Node("a", (), NEVER_RUN), pipe.Node("b", ("a",), NEVER_RUN),
                         pipe.Node("c", ("a", "b"), NEVER_RUN)])
    assert pipe.svg(chain).count(" C") == 1  # a -> c passes over b: drawn as an arc
    html = pipe.table_html(list(nodes.values()), Path("/p"))
    assert 'href="' in html and "outputs/a/a.ipynb</a>" in html


def test_tables_escape_and_align() -> None:
    text = text_table(["name", "acc"], [["<x>", 0.123456789], ["y", None]])
    assert text.splitlines() == ["name  acc", "----  --------", "<x>   0.123457", "y     -"]
    html = html_table(["name", "acc"], [["<x>", 1.0]])
    assert '<td class="l">&lt;x&gt;</td><td>1</td>' in html


def test_compile_on_save_picks_project_notebooks(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    nb = make_nb(root / "notebooks" / "a.ipynb", [(["step:one"], "x = 1")])
    (root / "params.yaml").write_text("{}\n")
    assert project_of(nb) == root.resolve()
    assert project_of(root / "notebooks" / ".ipynb_checkpoints" / "a-checkpoint.ipynb") is None
    assert project_of(root / "steps" / "one.ipynb") is None
    assert project_of(tmp_path / "elsewhere.ipynb") is None
    assert compile_saved(nb) is not None and (root / "steps" / "one.ipynb").exists()
    assert compile_saved(tmp_path / "elsewhere.ipynb") is None
    make_nb(nb, [(["stp:one"], "x = 1")])  # a tag error: logged, never raised
    assert compile_saved(nb) == []


def test_installed_package_enables_the_server_extension() -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "server", "extension",
                          "list"], capture_output=True, text=True, check=True)
    lines = (out.stdout + out.stderr).splitlines()
    assert any("mlops_nb" in ln and "enabled" in ln for ln in lines)
    assert any("mlops_nb" in ln and "OK" in ln for ln in lines)


def test_preview_names_a_tag_error_and_its_cell(tmp_path: Path) -> None:
    from mlops_nb.widgets.preview import preview

    root = tmp_path / "proj"
    nb = make_nb(root / "notebooks" / "a.ipynb", [(["step:one"], "x = 1"),
                                                 (["stp:two"], "y = x + 1")])
    shown = preview(root, nb)
    assert shown.steps == () and shown.error_cell == 2
    assert "notebooks/a.ipynb cell 2" in shown.error and "step:two" in shown.error
    assert shown.text().splitlines()[1].startswith("error: notebooks/a.ipynb cell 2")
    assert 'class="err"' in shown.html()
    make_nb(nb, [(["step:one"], "x = 1"), (["step:two"], "y = x + 1")])
    rows = {s.step: s for s in preview(root, nb).steps}
    assert rows["two"].inputs == (("x", "one"),) and rows["two"].cells == (2,)
    # another notebook with no step tag is skipped, as compile skips it (issue 26.9)
    make_nb(root / "notebooks" / "explore.ipynb", [([], "import os")])
    again = preview(root, nb)
    assert not again.error and [s.step for s in again.steps] == ["one", "two"]


def _dvc_exp(name: str, alpha: int, score: float, state: str | None, error: bool) -> dict:
    """One experiment of `dvc exp show --json` (DVC 3.67's shape, trimmed)."""
    data = {"rev": name * 5, "timestamp": "2026-12-07T01:11:54",
            "params": {"params.yaml": {"data": {"t": {"ALPHA": alpha}}}},
            "metrics": {"outputs/make/metrics.json": {"data": {"score": score}}}}
    return {"revs": [{"rev": name * 5, "name": name, "data": data, "experiments": None,
                      "error": {"msg": "Experiment run failed", "type": ""} if error else None}],
            "executor": {"state": state} if state else None, "name": name}


def test_failed_experiments_show_their_state_never_the_baselines_metrics() -> None:
    from mlops_nb.widgets import exp_queue
    from mlops_nb.widgets import experiments as exp

    base = {"rev": "b" * 40, "name": "master", "error": None,
            "data": {"rev": "b" * 40, "params": {"params.yaml": {"data": {"t": {"ALPHA": 2}}}},
                     "metrics": {"outputs/make/metrics.json": {"data": {"score": 2.0}}}},
            "experiments": [_dvc_exp("bad1", 6, 2.0, "failed", True),
                            _dvc_exp("good", 3, 3.0, "success", False),
                            _dvc_exp("inws", 4, 4.0, None, False),
                            _dvc_exp("wait", 9, 2.0, "queued", False),
                            _dvc_exp("busy", 8, 2.0, "running", False)]}
    rows = exp.parse([base])
    by = {r.name: r for r in rows}
    assert [(n, by[n].state) for n in ("bad1", "good", "inws", "wait", "busy")] == [
        ("bad1", "failed"), ("good", "success"), ("inws", "success"), ("wait", "queued"),
        ("busy", "running")]
    assert by["bad1"].metrics == {} and by["bad1"].error == "Experiment run failed"
    assert by["wait"].metrics == {} and by["busy"].metrics == {} and by["master"].state == ""
    assert by["good"].metrics == {"score": 3.0}
    _, _, diffs = exp.compare(rows, ["bad1"])
    assert [d.deltas for d in diffs if d.column == "score"] == [(None,)]  # never +0
    assert [x for x, _, _ in exp.plot_points(rows, "score", "t.ALPHA")] == [2.0, 3.0, 4.0]
    log = ("Running stage 'make':\n> python -m mlops_nb.step make\nmlops-nb: step 'make' failed:"
           " notebooks/t.ipynb cell 2: AssertionError: too big\nERROR: failed to reproduce\n")
    assert exp_queue.reason(log).startswith("mlops-nb: step 'make' failed")
    assert exp_queue.reason("x\nERROR: a\nERROR: b\n") == "ERROR: b"
    ran = exp_queue.states(rows, ["bad1", "good", "gone"])
    assert [r.state for r in ran] == ["failed", "success", "unknown"]
    two = [exp_queue.Ran("a", "failed", "why a"), exp_queue.Ran("b", "failed")]
    assert exp_queue.summary(two).startswith("2 of 2 failed: a (why a), b;")
    assert exp_queue.summary(ran[1:2]) == "1 of 1 succeeded"


def test_params_sync_rewrites_only_the_literals_and_refuses_what_has_none() -> None:
    from mlops_nb.errors import ConfigError
    from mlops_nb.pipeline import paramsync

    cell = ("# model settings\nMODEL = 'rf'  # one of: rf, lr\nC = 1.0   # regularisation\n"
            "LAYERS = [\n    1,\n    2,\n]  # sizes\n\nNAME = \"é\"  # ünïcode before\nN = 3")
    values = {"MODEL": paramsync.literal("m", "it's \"quoted\"\nand a newline"),
              "C": paramsync.literal("c", 2, like=1.0), "LAYERS": paramsync.literal("l", [3]),
              "N": paramsync.literal("n", 10 ** 4000)}
    new, done = paramsync.rewrite_cell(cell, values)
    assert done == {"MODEL", "C", "LAYERS", "N"}
    assert new.splitlines() == [
        "# model settings", "MODEL = 'it\\'s \"quoted\"\\nand a newline'  # one of: rf, lr",
        "C = 2.0   # regularisation", "LAYERS = [3]  # sizes", "", "NAME = \"é\"  # ünïcode before",
        "N = " + "1" + "0" * 4000]
    ns: dict = {}
    exec(new, ns)  # noqa: S102 - the rewritten cell is Python that reads back the values
    assert ns["MODEL"] == "it's \"quoted\"\nand a newline" and ns["N"] == 10 ** 4000
    huge = 10 ** 5000  # past Python's 4300-digit int <-> str limit
    for bad in (float("nan"), float("inf"), huge, {"a": {1, 2}}):
        with pytest.raises(ConfigError, match="has no Python literal"):
            paramsync.literal("k", bad)
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(ConfigError, match="has no Python literal"):
        paramsync.literal("k", deep)
    assert paramsync.literal("k", "x" * 1_000_000) == repr("x" * 1_000_000)
    assert par.declared_choices(cell) == {"MODEL": ["rf", "lr"]}
    assert par.declared_choices("K = 3  # one of: 1, 3, 5\nS = 'a'  # One of: 'a', \"b\", 1") \
        == {"K": [1, 3, 5], "S": ["a", "b", "1"]}
    assert par.declared_choices("X = '# one of: a, b'") == {}  # inside the string: no comment
    assert par.shown(1.0) == "1.0" and par.shown(True) == "True" and par.shown([1]) == "[1]"
    fields = par.fields({"g": {"MODEL": "svm"}}, {"g.MODEL": ["rf", "lr"]})
    assert fields[0].kind == "choice" and fields[0].choices == ("svm", "rf", "lr")


def test_params_sync_never_writes_through_a_symlink(tmp_path: Path) -> None:
    from mlops_nb.pipeline import paramsync

    root = tmp_path / "proj"
    elsewhere = make_nb(tmp_path / "other" / "s.ipynb", [(["pipeline-parameters"], "A = 1"),
                                                         (["step:one"], "b = A")])
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "s.ipynb").symlink_to(elsewhere)
    before = elsewhere.read_text()
    drift = paramsync.Drift("notebooks/s.ipynb", "s", "A", 1, 2)
    with pytest.raises(UsageError, match="a symlink or outside the project"):
        paramsync.to_notebook(root, [drift])
    assert elsewhere.read_text() == before
    (root / "params.yaml").symlink_to(tmp_path / "other" / "params.yaml")
    with pytest.raises(UsageError, match="a symlink or outside the project"):
        paramsync.to_params(root, [drift])


def test_two_dags_on_a_page_keep_their_arrowheads_and_links_stay_in_lab() -> None:
    import re

    nodes = pipe.layout([pipe.Node("a", (), NEVER_RUN, executed="outputs/a/a.ipynb"),
                         pipe.Node("b", ("a",), NEVER_RUN)])
    first, second = pipe.svg(nodes), pipe.svg(nodes)
    ids = [re.findall(r'<marker id="([^"]+)"', s) for s in (first, second)]
    assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]
    for svg, (marker,) in zip((first, second), ids, strict=True):
        assert re.findall(r'marker-end="url\(#([^)]+)\)"', svg) == [marker]
    table = pipe.table_html(nodes, Path.cwd())
    assert '<a href="outputs/a/a.ipynb">' in table and "target=" not in table


def test_the_plot_defaults_to_a_parameter_that_varies() -> None:
    from mlops_nb.widgets import experiments as exp

    def row(name: str, kind: str, **params: object) -> exp.ExpRow:
        return exp.ExpRow(name, name, "base", kind, params=dict(params))

    rows = [row("workspace", "workspace", SEED=1, N=9), row("base", "baseline", SEED=1, N=10),
            row("e1", "experiment", SEED=1, N=20), row("e2", "experiment", SEED=1, N=30)]
    assert exp.by_variation(rows, ["SEED", "N"]) == ["N", "SEED"]
    assert exp.by_variation(rows[:2], ["SEED", "N"]) == ["SEED", "N"]  # nothing varies


def test_a_planted_save_error_record_is_never_written_through_or_shown(tmp_path: Path) -> None:
    from mlops_nb.widgets import save_error

    root = tmp_path / "proj"
    nb = make_nb(root / "notebooks" / "a.ipynb", [(["stp:one"], "x = 1")])
    (root / "params.yaml").write_text("{}\n")
    (root / ".mlops_nb").mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    (root / ".mlops_nb" / "save-error.json").symlink_to(victim)
    assert compile_saved(nb) == []  # the save still succeeds
    assert victim.read_text() == "keep\n" and save_error.pending(root) is None
    (root / ".mlops_nb" / "save-error.json").unlink()
    assert compile_saved(nb) == []
    said = save_error.pending(root)
    assert said is not None and "cell 1" in said["error"]
    assert said["notebook"] == "notebooks/a.ipynb"
