"""The widgets' models on a real project (real `dvc exp show --json`, real runs), and the
%mlops magic in a real IPython kernel (nbclient).

One small project, built once for the module: a step `make` feeding two branches (`score`
with a metric, `side`), run with `dvc repro` and committed, then two experiments and a
queued one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops_nb.widgets import experiments as exp
from mlops_nb.widgets import parameters as par
from mlops_nb.widgets import pipeline as pipe
from mlops_nb.widgets.loader import load_step
from mlops_nb.widgets.preview import preview
from tests.conftest import cli, git_project, make_nb, sh

pytestmark = pytest.mark.slow

CELLS = [
    (["imports"], "import json"),
    (["pipeline-parameters"], "ALPHA = 2\nLABEL = 'x'\nFLAG = True"),
    (["step:make"], "assert ALPHA != 13, 'unlucky ALPHA'\ndata = [i * ALPHA for i in range(5)]"),
    (["step:score"], "score = sum(data) / 10.0\nprint(LABEL, score)"),
    (["step:side"], "side = len(data) if FLAG else 0"),
    (["pipeline-metrics"], "print(score)"),
]


@pytest.fixture(scope="module", autouse=True)
def short_lived_workers() -> Iterator[None]:
    """The views start tools with this process's environment: warm workers that DVC stages
    start must go away soon after the module, as those of conftest.tool_env do."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_NB_WORKER_IDLE", "30")
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("widgets") / "tiny"
    root.mkdir()
    git_project(root)
    make_nb(root / "notebooks" / "tiny.ipynb", CELLS)
    cli(["compile"], root)
    sh(["dvc", "repro", "-q"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "baseline"], root)
    sh(["dvc", "exp", "run", "-q", "-n", "alpha3", "-S", "tiny.ALPHA=3"], root)
    sh(["dvc", "exp", "run", "-q", "-n", "alpha5", "-S", "tiny.ALPHA=5"], root)
    sh(["dvc", "exp", "run", "--queue", "-n", "later", "-S", "tiny.ALPHA=7"], root)
    sh(["git", "checkout", "--", "params.yaml"], root)  # `exp run` left ALPHA=5 applied
    sh(["dvc", "checkout", "-q"], root)
    cli(["run"], root)  # checked-out outputs have new mtimes: `run` makes them its own again
    return root


def test_experiments_rows_from_real_dvc(tiny: Path) -> None:
    rows = exp.load(tiny)
    by = {r.name: r for r in rows}
    assert rows[0].kind == "workspace"
    base = next(r for r in rows if r.kind == "baseline")
    assert base.metrics["score"] == 2.0 and base.params["tiny.ALPHA"] == 2
    assert by["alpha3"].metrics["score"] == 3.0 and by["alpha3"].baseline == base.name
    assert by["alpha5"].params == {**base.params, "tiny.ALPHA": 5}
    assert by["later"].queued and not by["alpha3"].queued
    params, metrics = exp.columns(rows)
    assert metrics == ["score"]
    assert params == ["tiny.ALPHA", "tiny.LABEL", "tiny.FLAG"]
    header, body = exp.table(rows)
    assert header == ["name", "state", "score", "tiny.ALPHA", "tiny.LABEL", "tiny.FLAG"]
    assert ["alpha3", "success", 3.0, 3, "x", True] in body
    assert ["later", "queued", None, 7, "x", True] in body


def test_filter_sort_compare_plot(tiny: Path) -> None:
    rows = exp.load(tiny)
    names = [r.name for r in exp.filter_rows(rows, "score>2.5")]
    assert names == ["workspace", "alpha3", "alpha5"] or \
        sorted(names) == sorted(["workspace", "alpha3", "alpha5"])
    assert [r.name for r in exp.filter_rows(rows, "tiny.ALPHA=5")] == ["workspace", "alpha5"]
    assert {r.name for r in exp.filter_rows(rows, "alph")} >= {"alpha3", "alpha5", "workspace"}
    ranked = exp.sort_rows([r for r in rows if r.kind != "workspace"], "score",
                           descending=True)
    assert [r.name for r in ranked][:3] == ["alpha5", "alpha3", ranked[2].name]
    assert ranked[-1].name == "later"  # no metric yet: last
    base, chosen, diffs = exp.compare(rows, ["alpha3", "alpha5"])
    assert base.kind == "baseline" and [r.name for r in chosen] == ["alpha3", "alpha5"]
    by_col = {d.column: d for d in diffs}
    assert by_col["score"].deltas == (1.0, 3.0)
    assert by_col["tiny.ALPHA"].values == (3, 5) and "tiny.LABEL" not in by_col
    points = exp.plot_points(rows, "score", "tiny.ALPHA")
    assert [(x, y) for x, y, _ in points if _ != "workspace"] == [(2.0, 2.0), (3.0, 3.0),
                                                                   (5.0, 5.0)]
    with pytest.raises(exp.ExperimentsError, match="no experiment named nope"):
        exp.compare(rows, ["nope"])


def test_experiments_view_text_and_html(tiny: Path) -> None:
    from mlops_nb.widgets.exp_view import ExperimentsView

    view = ExperimentsView(tiny)
    bundle = view._repr_mimebundle_()
    assert "alpha3" in bundle["text/plain"] and "score" in bundle["text/plain"]
    assert '<table class="mlops-exp">' in bundle["text/html"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "alpha5" in view.compare_html(["alpha5"])


def test_pipeline_states_and_branches(tiny: Path) -> None:
    nodes = {n.step: n for n in pipe.load(tiny)}
    assert {n.state for n in nodes.values()} == {pipe.UP_TO_DATE}
    assert (nodes["make"].column, nodes["score"].column, nodes["side"].column) == (0, 1, 1)
    assert {nodes["score"].row, nodes["side"].row} == {0, 1}  # branches side by side
    assert nodes["score"].executed == "outputs/score/score.ipynb"
    svg = pipe.svg(list(nodes.values()))
    assert svg.count("<rect") == 3 and svg.count("marker-end") == 2


def test_parameters_fields_grid_and_preview(tiny: Path) -> None:
    fields = par.read_fields(tiny)
    assert [(f.key, f.kind) for f in fields] == [("tiny.ALPHA", "int"), ("tiny.LABEL", "text"),
                                                  ("tiny.FLAG", "bool")]
    pv = preview(tiny, tiny / "notebooks" / "tiny.ipynb")
    assert not pv.error
    rows = {s.step: s for s in pv.steps}
    assert rows["score"].inputs == (("data", "make"),) and rows["make"].outputs == ("data",)
    assert rows["make"].params == ("ALPHA",) and rows["side"].params == ("FLAG",)


def test_load_step_and_refused_hash(tiny: Path) -> None:
    ns: dict = {}
    report = load_step(tiny, "score", ns)
    assert ns["data"] == [0, 2, 4, 6, 8] and ns["LABEL"] == "x"
    assert "data from step make" in report.text() and "run finished" in report.text()


def _notebook(path: Path, sources: list[str]) -> None:
    make_nb(path, [([], s) for s in sources])


def test_magics_in_a_real_kernel(tiny: Path, tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb_path = tiny / "notebooks" / ".magics-test.ipynb"
    _notebook(nb_path, [
        "%load_ext mlops_nb\n%load_ext mlops_nb",
        "%mlops",
        "%mlops load score",
        "import json\nprint(json.dumps({'data': data, 'LABEL': LABEL}))",
        "%mlops load nosuch",
        "%mlops exp show",
        "%mlops pipeline",
        "import mlops_nb\nmlops_nb.log_metric('x', 1.5)\n"
        "from mlops_nb import runtime\nprint(runtime.metrics())",
        "from mlops_nb import runtime\ntry:\n    runtime.load('make', 'data')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)",
        "import pathlib\np = pathlib.Path('../outputs/make/data/data.json')\n"
        "p.write_text(p.read_text() + ' ')",
        "%mlops load score",
        "%mlops compile",
        "%mlops status",
        "%mlops run score",
        "%mlops frobnicate",
    ])
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    nb_path.unlink()

    def text(i: int, stream: str = "stdout") -> str:
        outs = nb.cells[i].outputs
        return "".join(o.get("text", "") for o in outs if o.get("name") == stream)

    def errors(i: int) -> list:
        return [o for o in nb.cells[i].outputs if o.output_type == "error"]

    assert not any(errors(i) for i in range(len(nb.cells)))
    assert "%mlops load STEP" in text(1)
    assert "loaded the inputs of step 'score'" in text(2) and "from step make" in text(2)
    assert json.loads(text(3)) == {"data": [0, 2, 4, 6, 8], "LABEL": "x"}
    err = text(4, "stderr")
    assert err.startswith("mlops: error: no step named 'nosuch'") and err.count("\n") == 1
    shown = next(o for o in nb.cells[5].outputs if o.output_type == "display_data")
    assert "alpha3" in shown.data["text/plain"] and "mlops-exp" in shown.data["text/html"]
    piped = next(o for o in nb.cells[6].outputs if o.output_type == "display_data")
    assert "up to date" in piped.data["text/plain"]
    assert "{'x': 1.5}" in text(7) and "recorded in the step's metrics file only when"\
        in text(7, "stderr")
    assert text(8).startswith("UsageError mlops_nb.runtime.load() works only inside")
    refused = text(10, "stderr")
    assert "hash mismatch" in refused and refused.count("\n") == 1
    assert "3 steps: make -> " in text(11)
    assert "make" in text(12) and "changed (outputs missing or changed)" in text(12)
    # make's output was changed by hand: it reruns; its value is the same, so score is kept
    assert text(13).splitlines() == ["make: running", "make: done", "score: up to date",
                                     "ran 1, up to date 1"]
    assert text(14, "stderr") == "mlops: error: unknown %mlops command 'frobnicate'; `%mlops`" \
        " lists them\n"


def _controls(box) -> list:  # noqa: ANN001 - an ipywidgets container
    out = [box]
    for child in getattr(box, "children", ()):
        out += _controls(child)
    return out


def test_pipeline_view_runs_a_step_in_the_background(tiny: Path) -> None:
    import ipywidgets as w

    from mlops_nb.widgets.views import PipelineView

    view = PipelineView(tiny)
    parts = _controls(view.widget)
    shown = next(c for c in parts if isinstance(c, w.Output)).outputs[0]["data"]["text/html"]
    assert "outputs/score/score.ipynb</a>" in shown and "<svg" in shown
    button = next(c for c in parts if isinstance(c, w.Button) and c.description == "Run step")
    next(c for c in parts if isinstance(c, w.Dropdown) and c.description == "step").value = \
        "score"
    next(c for c in parts if isinstance(c, w.Checkbox) and c.description == "force").value = True
    button.click()  # returns at once: the run is a child process watched by a thread
    assert view.thread is not None
    view.thread.join(timeout=300)
    assert not view.thread.is_alive()
    assert view.events.index(("score", "running")) < view.events.index(("score", "done"))
    # forced: the named step only; its up-to-date upstream step is not run again
    assert ("make", "up to date") in view.events and ("make", "running") not in view.events
    assert view.events[-1] == ("run", "done")
    assert {n.state for n in view.nodes} == {pipe.UP_TO_DATE}
    assert "score" in view.text() and "up to date" in view.text()


# Last in the module: running the queue also runs the fixture's queued experiment "later".
def test_parameters_view_queues_and_runs_an_experiment(tiny: Path) -> None:
    import ipywidgets as w

    from mlops_nb.widgets.params_view import ParametersView

    view = ParametersView(tiny)
    assert "tiny.ALPHA" in view.text() and "int" in view.text()
    parts = _controls(view.widget)
    buttons = {c.description: c for c in parts if isinstance(c, w.Button)}
    alpha = next(c for c in parts if isinstance(c, w.IntText) and c.description == "tiny.ALPHA")
    status = next(c for c in parts if isinstance(c, w.HTML) and c is parts[-1])
    for value in (4, 13):  # 13 fails in step make
        alpha.value = value
        buttons["Queue experiment"].click()
        assert view.thread is not None
        view.thread.join(timeout=120)
    queued = [r for r in exp.load(tiny) if r.queued]
    assert {r.params["tiny.ALPHA"] for r in queued} == {4, 7, 13}
    buttons["Run queue"].click()
    view.thread.join(timeout=600)
    # DVC exits 0 although a task failed: the widget reads each experiment's state
    assert view.events[-1] == ("queue", "failed")
    assert len([e for e in view.events if e[1] == "running"]) == 3
    assert sorted(s for n, s in view.events if n != "queue" and s in ("success", "failed")) == [
        "failed", "success", "success"]
    assert "1 of 3 failed: " in status.value and "unlucky ALPHA" in status.value
    assert "dvc exp run --run-all: done" not in status.value
    rows = exp.load(tiny)
    assert not any(r.queued for r in rows)
    assert any(r.params["tiny.ALPHA"] == 4 and r.metrics.get("score") == 4.0 for r in rows)
    bad = next(r for r in rows if r.params.get("tiny.ALPHA") == 13)
    assert bad.state == "failed" and bad.metrics == {}  # not the baseline's score
    # the experiments widget: its state, no +0 against the baseline, its log
    from mlops_nb.widgets.exp_view import ExperimentsView

    shown = ExperimentsView(tiny)
    assert f"1 of {len([r for r in rows if r.kind == 'experiment'])} experiments failed: " \
        f"{bad.name}" in shown.text()
    assert [bad.name, "failed", None, 13, "x", True] in exp.table(shown.rows)[1]
    compared = shown.compare_html([bad.name])
    assert "+0" not in compared
    log = shown.log_html(bad.name)
    assert "unlucky ALPHA" in log and f"{bad.name}: failed: mlops-nb: step" in log


SYNC_CELLS = [
    (["pipeline-parameters"], "# settings\nALPHA = 2  # how much\nMODEL = 'rf'  # one of: rf, lr\n"
                              "C = 1.0\n"),
    (["step:make"], "out = [ALPHA, MODEL, C]"),
]


def test_params_sync_after_dvc_exp_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`dvc exp run -S` changes params.yaml only: status, %mlops status's source and the
    parameters widget say what differs; `params sync` writes either way."""
    from mlops_nb.widgets.params_view import ParametersView

    root = tmp_path / "sync"
    root.mkdir()
    git_project(root)
    nb = make_nb(root / "notebooks" / "s.ipynb", SYNC_CELLS)
    cli(["compile"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-qm", "compiled"], root)
    sh(["dvc", "exp", "run", "-q", "-S", "s.ALPHA=3", "-S", "s.C=2.5"], root)
    status = cli(["status"], root).stderr
    assert "2 parameter(s) differ between params.yaml and the notebooks'" in status
    assert "s.ALPHA: 3 in params.yaml, 2 in notebooks/s.ipynb" in status
    assert "s.C: 2.5 in params.yaml, 1.0 in notebooks/s.ipynb" in status
    from mlops_nb.widgets.magics import dispatch

    monkeypatch.chdir(root / "notebooks")
    dispatch("status", None)  # %mlops status
    magic = capsys.readouterr().out
    assert "make" in magic and "s.ALPHA: 3 in params.yaml, 2 in notebooks/s.ipynb" in magic
    view = ParametersView(root)
    text = view.text()
    assert [ln.split() for ln in text.splitlines() if ln.startswith("s.C ")] == [
        ["s.C", "2.5", "float", "1.0"]] and "params sync --to-notebook" in text
    assert [(f.key, f.kind, f.choices) for f in view.fields if f.key == "s.MODEL"] == [
        ("s.MODEL", "choice", ("rf", "lr"))]
    out = cli(["params", "sync", "--to-notebook"], root).stdout
    assert "wrote notebooks/s.ipynb" in out
    source = "".join(json.loads(nb.read_text())["cells"][0]["source"])
    assert source == ("# settings\nALPHA = 3  # how much\nMODEL = 'rf'  # one of: rf, lr\n"
                      "C = 2.5\n")
    assert "differ" not in cli(["status"], root).stdout
    assert "agree; nothing to write" in cli(["params", "sync", "--to-params"], root).stdout
    # hostile values from params.yaml: quotes, a newline, a huge number
    params = root / "params.yaml"
    text = params.read_text()
    hostile = "it's \"q\"\nline two"
    params.write_text(text.replace("MODEL: rf", "MODEL: " + json.dumps(hostile)))
    cli(["params", "sync", "--to-notebook"], root)
    ns: dict = {}
    exec("".join(json.loads(nb.read_text())["cells"][0]["source"]), ns)  # noqa: S102
    assert ns["MODEL"] == hostile and ns["ALPHA"] == 3
    before = nb.read_text()
    params.write_text(text.replace("ALPHA: 3", "ALPHA: " + "9" * 5000))
    bad = cli(["params", "sync", "--to-notebook"], root, check=False)
    assert bad.returncode == 3 and "params.yaml: invalid YAML: Exceeds the limit" in bad.stderr
    assert nb.read_text() == before  # nothing partial
    # the other way: the notebook's values into params.yaml, its comment kept
    params.write_text("# values of the pipeline\n" + text.replace("ALPHA: 3", "ALPHA: 8"))
    cli(["params", "sync", "--to-params"], root)
    assert params.read_text().startswith("# values of the pipeline\n")
    assert "ALPHA: 3" in params.read_text() and "MODEL: " in params.read_text()
    assert "differ" not in cli(["status"], root).stdout
    # a float parameter shows as written: 1.0, never 1
    params.write_text(params.read_text().replace("C: 2.5", "C: 1.0"))
    import ipywidgets as w

    shown = ParametersView(root)
    box = next(c for c in _controls(shown.widget) if getattr(c, "description", "") == "s.C")
    assert isinstance(box, w.Text) and box.value == "1.0"
    assert "<td>1.0</td>" in shown.html()
    box.value = "2"
    queue = next(c for c in _controls(shown.widget) if isinstance(c, w.Button)
                 and c.description == "Queue experiment")
    queue.click()
    assert shown.thread is not None
    shown.thread.join(timeout=120)
    assert [r.params["s.C"] for r in exp.load(root) if r.queued] == [2.0]


def test_a_tag_error_saved_from_jupyterlab_shows_in_the_next_cell(tmp_path: Path) -> None:
    """The compile-on-save hook records the error; the kernel with %mlops loaded shows it in
    the output of the next cell it runs, once; a save that compiles clears it (issue 26.8)."""
    import nbformat
    from nbclient import NotebookClient

    from mlops_nb.widgets.server_ext import compile_saved

    root = tmp_path / "proj"
    (root / "notebooks").mkdir(parents=True)
    (root / "params.yaml").write_text("{}\n")
    saved = make_nb(root / "notebooks" / "a.ipynb", [(["step:one"], "x = 1"),
                                                    (["stp:two"], "y = x + 1")])
    assert compile_saved(saved) == []  # as JupyterLab's save calls it: logged, recorded
    fixed = ("import json, pathlib\nfrom mlops_nb.widgets.server_ext import compile_saved\n"
             "p = pathlib.Path('a.ipynb')\nnb = json.loads(p.read_text())\n"
             "nb['cells'][1]['metadata']['tags'] = [TAG]\np.write_text(json.dumps(nb))\n"
             "print(compile_saved(p.resolve()))")
    runner = root / "notebooks" / ".runner.ipynb"
    _notebook(runner, ["%load_ext mlops_nb", "a = 1", "b = 2", "TAG = 'step:two'\n" + fixed,
                       "c = 3", "TAG = 'prev:nope'\n" + fixed, "d = 4"])
    nb = nbformat.read(runner, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(runner.parent)}}).execute()

    def err(i: int) -> str:
        return "".join(o.get("text", "") for o in nb.cells[i].outputs if o.get("name") ==
                       "stderr")

    assert err(1).startswith("mlops: the last save of notebooks/a.ipynb did not compile:"
                             " notebooks/a.ipynb cell 2: unknown tag 'stp:two'")
    assert err(2) == "" and err(4) == ""  # once; and cleared by the save that compiled
    assert "prev:nope" in err(6) and "cell 2" in err(6)
    assert not (root / ".mlops_nb" / "save-error.json").is_symlink()
