"""`mlops-nb export kfp` writes a KFP v2 package (no pipeline runs here; see
tests/integration/test_export_kfp_local.py for kfp.local runs)."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, cli, cli_in_process, make_nb

kfp_components = pytest.importorskip("kfp.components")

FANOUT = REPO / "tests/fixtures/fanout"


@pytest.fixture
def fan(tmp_path: Path) -> Path:
    root = tmp_path / "fan"
    shutil.copytree(FANOUT, root)
    return root


def _docs(path: Path) -> list[dict]:
    return list(yaml.safe_load_all(path.read_text()))


def test_package_loads_and_has_the_spec_dag(fan):
    res = cli_in_process(["export", "kfp"], fan)
    package = fan / "kfp/pipeline.yaml"
    assert "wrote kfp/pipeline.yaml" in res.stdout
    pipeline = kfp_components.load_component_from_file(str(package))
    assert pipeline.name == "fan"
    ir = _docs(package)[0]
    tasks = ir["root"]["dag"]["tasks"]
    assert sorted(tasks) == ["combine", "double", "make", "report", "square"]
    deps = {name: sorted(t.get("dependentTasks", [])) for name, t in tasks.items()}
    # fan-out: double and square both wait for make only, so they may run in parallel
    assert deps == {"make": [], "double": ["make"], "square": ["make"],
                    "combine": ["double", "square"], "report": ["combine"]}
    # the data edges are artifacts; `prev:combine` carries none: an order-only .after()
    combine_in = tasks["combine"]["inputs"]["artifacts"]
    assert combine_in == {
        "double_doubled": {"taskOutputArtifact": {"outputArtifactKey": "doubled",
                                                  "producerTask": "double"}},
        "square_squares": {"taskOutputArtifact": {"outputArtifactKey": "squares",
                                                  "producerTask": "square"}}}
    assert "artifacts" not in tasks["report"].get("inputs", {})
    # every parameter of params.yaml, with its value as default
    params = ir["root"]["inputDefinitions"]["parameters"]
    assert {k: (v["parameterType"], v["defaultValue"]) for k, v in params.items()} == {
        "fan_N": ("NUMBER_INTEGER", 10), "fan_SCALE": ("NUMBER_INTEGER", 2),
        "fan_LABEL": ("STRING", "null")}  # None travels as JSON text
    # the step's params feed its component
    assert tasks["double"]["inputs"]["parameters"] == {
        "SCALE": {"componentInputParameter": "fan_SCALE"}}
    # executed notebooks as HTML, metrics as Metrics artifacts
    outs = ir["components"]["comp-combine"]["outputDefinitions"]["artifacts"]
    assert outs["notebook"]["artifactType"]["schemaTitle"] == "system.HTML"
    assert outs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"


def _step_spec(ir: dict, step: str) -> dict:
    """The data a component hands to run_step: the one string literal of its source."""
    code = ir["deploymentSpec"]["executors"][f"exec-{step}"]["container"]["command"][-1]
    calls = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == "_mlops_nb_run_step"]
    assert len(calls) == 1, code
    return json.loads(ast.literal_eval(calls[0].args[0]))


def test_step_code_travels_inside_the_package_and_data_in_the_image(fan):
    cli_in_process(["export", "kfp", "--image", "registry.example/fan:1"], fan)
    ir = _docs(fan / "kfp/pipeline.yaml")[0]
    make = ir["deploymentSpec"]["executors"]["exec-make"]["container"]
    assert make["image"] == "registry.example/fan:1"
    spec = _step_spec(ir, "make")
    assert "offset = int(open(" in spec["notebook"]
    assert '"generated_by": "mlops-nb compile"' in spec["notebook"]
    assert "pip install" not in " ".join(make["command"])  # the image holds the libraries
    # the data file is not in any command line: it goes in the image, by digest, and only
    # the step that reads it asks for it
    digest = hashlib.sha256(b"7\n").hexdigest()
    assert spec["files"] == {"notebooks/data/offset.txt": digest}
    assert (fan / "kfp/data" / digest).read_bytes() == b"7\n"
    assert all(_step_spec(ir, s)["files"] == {} for s in ("double", "square", "combine"))
    assert "Nwo=" not in (fan / "kfp/pipeline.yaml").read_text()
    assert "COPY data/ /opt/mlops_nb/data/" in (fan / "kfp/Dockerfile").read_text()


def test_parameter_values_come_from_params_yaml(fan):
    cli_in_process(["compile"], fan)
    text = (fan / "params.yaml").read_text().replace("N: 10", "N: 25")
    (fan / "params.yaml").write_text(text)
    cli_in_process(["export", "kfp"], fan)
    params = _docs(fan / "kfp/pipeline.yaml")[0]["root"]["inputDefinitions"]["parameters"]
    assert params["fan_N"]["defaultValue"] == 25


def test_export_twice_is_byte_identical_and_writes_the_image_files(fan, tmp_path):
    cli_in_process(["export", "kfp", "-o", "out/p.yaml"], fan)
    first = {p.name: p.read_bytes() if p.is_file() else None for p in (fan / "out").iterdir()}
    assert sorted(first) == ["Dockerfile", "data", "image.txt", "p.yaml", "requirements.lock"]
    # again as a process of its own (another hash seed, nothing kept in memory): a user's
    # second export, where set or dict order that depends on the process would show
    res = cli(["export", "kfp", "-o", "out/p.yaml"], fan)
    assert "wrote" not in res.stdout
    assert {p.name: p.read_bytes() if p.is_file() else None
            for p in (fan / "out").iterdir()} == first
    lock = first["requirements.lock"].decode()
    assert "\nkfp==" in lock and "\npandas==" in lock and "#   mlops_nb==" in lock
    assert first["image.txt"].decode().startswith("mlops-nb-fan:")
    assert b"COPY requirements.lock" in first["Dockerfile"]
    ir = _docs(fan / "out/p.yaml")[0]
    image = ir["deploymentSpec"]["executors"]["exec-make"]["container"]["image"]
    assert image == first["image.txt"].decode().strip()


def test_kale_resource_tags_set_task_resources(fan):
    cli_in_process(["export", "kfp"], fan)
    ir, platform = _docs(fan / "kfp/pipeline.yaml")
    execs = ir["deploymentSpec"]["executors"]
    double = execs["exec-double"]["container"]["resources"]
    assert double["resourceMemoryLimit"] == "1Gi"
    assert double["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert double["accelerator"]["resourceCount"] == "1"
    assert execs["exec-square"]["container"]["resources"]["resourceCpuLimit"] == "500m"
    assert "resources" not in execs["exec-make"]["container"]
    pod = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-double"]
    assert pod["podMetadata"] == {"annotations": {"owner": "data-science"},
                                  "labels": {"team": "ml"}}


def test_data_uri_makes_data_files_importer_inputs(fan):
    cli_in_process(["export", "kfp", "--data-uri", "gs://bucket/fan"], fan)
    ir = _docs(fan / "kfp/pipeline.yaml")[0]
    tasks = ir["root"]["dag"]["tasks"]
    importers = [t for t in tasks.values() if t["componentRef"]["name"].startswith(
        "comp-importer")]
    assert len(importers) == 1
    uri = ir["components"][importers[0]["componentRef"]["name"]]
    assert uri and "gs://bucket/fan/notebooks/data/offset.txt" in (
        fan / "kfp/pipeline.yaml").read_text()
    assert "Nwo=" not in (fan / "kfp/pipeline.yaml").read_text()  # not packaged


def test_refuses_a_step_that_writes_outside_its_outputs(project):
    make_nb(project / "notebooks/w.ipynb", [
        (["step:make"], "import pandas as pd\ndf = pd.DataFrame({'a': [1]})\n"
                        "df.to_csv('interim.csv')"),
        (["step:use"], "import pandas as pd\nback = pd.read_csv('interim.csv')"),
    ])
    res = cli_in_process(["export", "kfp"], project, check=False)
    assert res.returncode == 3
    assert "step 'make': writes notebooks/interim.csv by literal path" in res.stderr
    assert not (project / "kfp").exists()


def test_refuses_an_output_that_is_a_file_handle(project):
    make_nb(project / "notebooks/h.ipynb", [
        (["step:opener"], "f = open('notes.txt', 'w')"),
        (["step:writer"], "f.write('x')"),
    ])
    res = cli_in_process(["export", "kfp"], project, check=False)
    assert res.returncode == 3
    assert "step 'opener': hands 'f' (notebooks/h.ipynb cell 1: open(...))" in res.stderr


def test_refuses_unknown_resource_and_bad_settings(project):
    make_nb(project / "notebooks/r.ipynb", [
        (["step:a", "limit:ephemeral-storage:1Gi"], "x = 1"),
    ])
    res = cli_in_process(["export", "kfp"], project, check=False)
    assert res.returncode == 3
    assert "notebooks/r.ipynb cell 1: tag 'limit:ephemeral-storage:1Gi' of step 'a'" in (
        res.stderr)
    make_nb(project / "notebooks/r.ipynb", [(["step:a"], "x = 1")])
    res = cli_in_process(["export", "kfp", "-S", "r.X=1"], project, check=False)
    assert res.returncode == 2 and "add --local or --submit" in res.stderr
    res = cli_in_process(["export", "kfp", "--local", "-S", "r.NOPE=1"], project, check=False)
    assert res.returncode == 2 and "expected GROUP.NAME=VALUE" in res.stderr


def test_vertex_accelerator_names_are_accelerators(project):
    make_nb(project / "notebooks/v.ipynb", [
        (["step:train", "limit:NVIDIA_TESLA_T4:2"], "x = 1"),
    ])
    cli_in_process(["export", "kfp"], project)
    ir = _docs(project / "kfp/pipeline.yaml")[0]
    accel = ir["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"][
        "accelerator"]
    assert (accel["resourceType"], accel["resourceCount"]) == ("NVIDIA_TESLA_T4", "2")


# names, values and tags made of what breaks generated code: quotes, triple quotes,
# backslashes, newlines, braces, shell substitutions
EVIL_NAME = 'y"""+str(__import__("os").system("touch PWNED"))+"""'
EVIL_NAME2 = "n\\'{0}$(touch PWNED2)\n\\"
EVIL = 'a"""b\'\'\'c\\d\n{x}$(touch PWNED3)`touch PWNED4`'


def evil_project(root: Path) -> Path:
    make_nb(root / f"notebooks/{EVIL_NAME}.ipynb", [
        (["pipeline-parameters"], f"S = {EVIL!r}\nL = [{EVIL!r}, 1]\nD = {{{EVIL!r}: 2}}"),
        (["step:a", "annotation:note:" + EVIL],
         f"assert S == {EVIL!r}, S\nassert L == [{EVIL!r}, 1] and type(L[1]) is int, L\n"
         f"assert D == {{{EVIL!r}: 2}} and type(D[{EVIL!r}]) is int, D\n"
         f"import os\nassert os.environ['H'] == {EVIL!r}\nx = S + '!'"),
        (["step:b"], f"assert x == {EVIL + '!'!r}\ny = len(x)"),
    ])
    make_nb(root / f"notebooks/{EVIL_NAME2}.ipynb", [
        (["pipeline-parameters"], f"T = {EVIL!r}"),
        (["step:c"], f"assert T == {EVIL!r}\nz = T"),
    ])
    return root


def test_hostile_names_values_and_tags_are_data_never_code(project):
    evil_project(project)
    res = cli_in_process(["export", "kfp", "--env", f"H={EVIL}", "--data-uri",
                          f"gs://b/{EVIL}"], project, check=False)
    assert res.returncode == 0, res.stderr
    assert list(project.rglob("PWNED*")) == []  # nothing ran
    ir, platform = _docs(project / "kfp/pipeline.yaml")  # still YAML, no key injected
    assert sorted(ir["root"]["dag"]["tasks"]) == ["a", "b", "c"]
    params = {k: v["defaultValue"] for k, v in ir["root"]["inputDefinitions"][
        "parameters"].items()}
    # lists and dicts travel as JSON text, so their ints stay ints
    assert sorted(params.values()) == sorted([EVIL, EVIL, json.dumps([EVIL, 1]),
                                              json.dumps({EVIL: 2})])
    assert EVIL_NAME in ir["pipelineInfo"]["description"]
    assert EVIL_NAME2 in ir["pipelineInfo"]["description"]
    spec = _step_spec(ir, "a")
    assert spec["source"] == f"notebooks/{EVIL_NAME}.ipynb"
    cells = json.loads(spec["notebook"])["cells"]
    assert any(f"assert S == {EVIL!r}" in "".join(c["source"]) for c in cells)
    assert _step_spec(ir, "c")["source"] == f"notebooks/{EVIL_NAME2}.ipynb"
    pod = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-a"]
    assert pod["podMetadata"]["annotations"] == {"note": EVIL}
    env = ir["deploymentSpec"]["executors"]["exec-a"]["container"]["env"]
    assert env == [{"name": "H", "value": EVIL}]
    # the generated component source is one function whose only literal is the step's data
    code = ir["deploymentSpec"]["executors"]["exec-a"]["container"]["command"][-1]
    tree = ast.parse(code)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in funcs] == ["a"]
    consts = [n.value for n in ast.walk(funcs[0]) if isinstance(n, ast.Constant)]
    assert len(consts) == 1 and json.loads(consts[0])["step"] == "a"


def test_hostile_tag_values_that_cannot_be_honoured_are_refused(project):
    for tag, why in [(f"image:x{EVIL}", "not an image reference"),
                     ("image:python$(touch PWNED)", "not an image reference"),
                     (f"label:k:{EVIL}", "malformed"),
                     (f"secret:s:k:{EVIL}", "expected secret:NAME:KEY:ENV"),
                     ("secret:S$(x):k:ENV", "expected secret:NAME:KEY:ENV"),
                     ("cache:off", "cache:disabled")]:
        make_nb(project / "notebooks/t.ipynb", [([("step:a"), tag], "x = 1")])
        res = cli_in_process(["export", "kfp"], project, check=False)
        assert res.returncode == 3, (tag, res.stderr)
        assert "notebooks/t.ipynb cell 1: tag" in res.stderr and why in res.stderr, res.stderr
        assert not (project / "kfp/pipeline.yaml").exists()
    assert list(project.rglob("PWNED*")) == []


def test_kale_cache_secret_tags_and_notebook_settings_reach_the_ir(project):
    make_nb(project / "notebooks/k.ipynb", [
        (["step:a", "cache:disabled", "secret:db-creds:password:DB_PASSWORD",
          "secret:db-creds:user:DB_USER"], "x = 1"),
        (["step:b"], "y = x + 1"),
    ])
    doc = json.loads((project / "notebooks/k.ipynb").read_text())
    doc["metadata"]["kubeflow_notebook"] = {
        "volumes": [{"type": "pvc", "name": "workspace-data", "mount_point": "/home/jovyan",
                     "size": 5, "size_type": "Gi"}]}
    (project / "notebooks/k.ipynb").write_text(json.dumps(doc))
    cli_in_process(["export", "kfp"], project)
    ir, platform = _docs(project / "kfp/pipeline.yaml")
    tasks = ir["root"]["dag"]["tasks"]
    assert tasks["a"]["cachingOptions"] == {}  # off
    assert tasks["b"]["cachingOptions"] == {"enableCache": True}
    pods = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert sorted(pods["exec-a"]["secretAsEnv"], key=lambda s: s["keyToEnv"][0]["envVar"]) == [
        {"keyToEnv": [{"envVar": "DB_PASSWORD", "secretKey": "password"}],
         "optional": False, "secretName": "db-creds",
         "secretNameParameter": {"runtimeValue": {"constant": "db-creds"}}},
        {"keyToEnv": [{"envVar": "DB_USER", "secretKey": "user"}],
         "optional": False, "secretName": "db-creds",
         "secretNameParameter": {"runtimeValue": {"constant": "db-creds"}}}]
    assert "secretAsEnv" not in pods["exec-b"]
    for ex in ("exec-a", "exec-b"):
        assert [(v["mountPath"], v["constant"]) for v in pods[ex]["pvcMount"]] == [
            ("/home/jovyan", "workspace-data")]
    # the notebook's enable_caching: false turns caching off for every step of it
    doc["metadata"]["kubeflow_notebook"] = {"enable_caching": False}
    (project / "notebooks/k.ipynb").write_text(json.dumps(doc))
    cli_in_process(["export", "kfp"], project)
    tasks = _docs(project / "kfp/pipeline.yaml")[0]["root"]["dag"]["tasks"]
    assert tasks["a"]["cachingOptions"] == tasks["b"]["cachingOptions"] == {}
    # what cannot be honoured is refused, naming the notebook and the volume
    for settings, why in [({"volumes": [{"type": "new_pvc", "name": "v", "mount_point": "/d",
                                         "size": 1, "size_type": "Gi"}]}, "type 'new_pvc'"),
                          ({"volumes": [{"type": "pvc", "name": "v", "mount_point": "d"}]},
                           "must be an absolute path"),
                          ({"enable_caching": "no"}, "expected true or false")]:
        doc["metadata"]["kubeflow_notebook"] = settings
        (project / "notebooks/k.ipynb").write_text(json.dumps(doc))
        res = cli_in_process(["export", "kfp"], project, check=False)
        assert res.returncode == 3 and "notebooks/k.ipynb: metadata kubeflow_notebook" in (
            res.stderr) and why in res.stderr, res.stderr


def test_image_tag_runs_in_a_derived_image_of_the_export(project):
    make_nb(project / "notebooks/i.ipynb", [
        (["step:a", "image:python:3.11"], "x = 1"),
        (["step:b"], "y = x + 1"),
    ])
    cli_in_process(["export", "kfp", "--image", "registry.example/team/steps:7"], project)
    execs = _docs(project / "kfp/pipeline.yaml")[0]["deploymentSpec"]["executors"]
    derived = execs["exec-a"]["container"]["image"]
    assert derived.startswith("registry.example/team/steps:7-base-")
    assert execs["exec-b"]["container"]["image"] == "registry.example/team/steps:7"
    # the derived image is the export's Dockerfile (libraries, mlops_nb) on that base
    assert (project / "kfp/derived-images.txt").read_text() == f"{derived} python:3.11\n"
    dockerfile = (project / "kfp/Dockerfile").read_text()
    assert "ARG BASE=python:" in dockerfile and "FROM ${BASE}" in dockerfile


def test_image_requirements_are_what_steps_need_with_hashes(project):
    make_nb(project / "notebooks/s.ipynb", [
        (["imports"], "import seaborn as sns"),
        (["step:a"], "x = 1"),
    ])
    cli_in_process(["export", "kfp"], project)
    lock = (project / "kfp/requirements.lock").read_text()
    names = {line.split("==")[0].lower() for line in lock.splitlines()
             if "==" in line and not line.startswith("#")}
    # what runs a step, what the notebook imports and what they need
    assert {"kfp", "ipython", "pandas", "pyarrow", "skops", "scikit-learn", "seaborn",
            "matplotlib"} <= names
    # never the development tools
    assert not names & {"jupyterlab", "dvc", "ploomber", "playwright", "papermill", "mypy",
                        "ruff", "pytest", "fastapi", "uvicorn", "celery", "nbconvert"}
    entries = [e for e in lock.split("\n") if "==" in e and not e.startswith("#")]
    assert all(e.endswith("\\") for e in entries)  # each pinned with its hashes
    assert lock.count("--hash=sha256:") >= len(entries)


def test_step_html_escapes_text_and_keeps_outputs():
    from mlops_nb.export.html import render

    png = "iVBORw0KGgo="
    doc = {"cells": [
        {"cell_type": "markdown", "source": ["# <b>title</b>"]},
        {"cell_type": "code", "execution_count": 3, "source": "print('<script>x</script>')",
         "outputs": [
             {"output_type": "stream", "name": "stdout", "text": ["<script>x</script>\n"]},
             {"output_type": "display_data", "data": {"image/png": png,
                                                      "text/plain": "<Figure>"}},
             {"output_type": "execute_result", "data": {"text/html": "<table></table>"}},
             {"output_type": "error", "ename": "ValueError", "evalue": "bad",
              "traceback": ["\x1b[31mValueError\x1b[0m: bad <data>"]}]}]}
    page = render(doc, 'step a of notebooks/"<x>".ipynb')
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;title&lt;/b&gt;" in page and "notebooks/&quot;&lt;x&gt;&quot;" in page
    assert f'<img src="data:image/png;base64,{png}">' in page and "&lt;Figure&gt;" not in page
    assert "<table></table>" in page  # HTML outputs as Jupyter (and nbconvert) show them
    assert "ValueError: bad &lt;data&gt;" in page and "\x1b" not in page
    assert "In [3]:" in page


def test_a_step_too_large_for_a_command_line_is_refused_naming_it(project):
    make_nb(project / "notebooks/l.ipynb", [
        (["step:huge"], "x = '" + "a" * 130_000 + "'"),
    ])
    res = cli_in_process(["export", "kfp"], project, check=False)
    assert res.returncode == 3
    assert "step 'huge': its compiled notebook is 12" in res.stderr
    assert "Linux refuses one argument over 128 KiB" in res.stderr
    assert not (project / "kfp").exists()


def test_kale_steps_defaults_apply_to_every_step_and_docker_image_is_reported(project):
    make_nb(project / "notebooks/d.ipynb", [
        (["step:a", "limit:cpu:2"], "x = 1"),
        (["step:b"], "y = x + 1"),
    ])
    doc = json.loads((project / "notebooks/d.ipynb").read_text())
    doc["metadata"]["kubeflow_notebook"] = {
        "steps_defaults": ["label:team:ml", "limit:cpu:1"],
        "docker_image": "gcr.io/arrikto/jupyter-kale:v0.5"}
    (project / "notebooks/d.ipynb").write_text(json.dumps(doc))
    res = cli_in_process(["export", "kfp"], project)
    assert "docker_image 'gcr.io/arrikto/jupyter-kale:v0.5' is not used" in res.stderr
    ir, platform = _docs(project / "kfp/pipeline.yaml")
    execs = ir["deploymentSpec"]["executors"]
    # a step's own tag overrides the default
    assert execs["exec-a"]["container"]["resources"]["resourceCpuLimit"] == "2"
    assert execs["exec-b"]["container"]["resources"]["resourceCpuLimit"] == "1"
    pods = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert pods["exec-a"]["podMetadata"]["labels"] == pods["exec-b"]["podMetadata"]["labels"] \
        == {"team": "ml"}
    doc["metadata"]["kubeflow_notebook"] = {"steps_defaults": ["limit:ephemeral-storage:1Gi"]}
    (project / "notebooks/d.ipynb").write_text(json.dumps(doc))
    res = cli_in_process(["export", "kfp"], project, check=False)
    assert res.returncode == 3
    assert ("notebooks/d.ipynb: metadata kubeflow_notebook.steps_defaults: tag"
            " 'limit:ephemeral-storage:1Gi' of step 'a'") in res.stderr
