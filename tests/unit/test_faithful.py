"""The pipeline computes what the notebook computes (issue 25): the analysis' part."""

from __future__ import annotations

import logging
from pathlib import Path

from mlops_nb.compile.notebooks import render_step
from mlops_nb.notebook.randomness import seeds_global_random
from mlops_nb.notebook.tags import parse_notebook
from mlops_nb.pipeline.randomchain import RANDOM_STATE
from mlops_nb.pipeline.spec import build_spec
from tests.conftest import make_nb


def spec_of(tmp_path: Path, cells, name="nb"):
    path = make_nb(tmp_path / "notebooks" / f"{name}.ipynb", cells)
    return build_spec([parse_notebook(path, f"notebooks/{name}.ipynb")], tmp_path)


# --- item 1: the global random generators' state goes from step to step --------------------

def test_seeding_is_found_through_the_notebooks_imports():
    assert seeds_global_random(["import numpy as np", "np.random.seed(0)"])
    assert seeds_global_random(["import random\nrandom.seed(1)"])
    assert seeds_global_random(["from numpy.random import seed\nseed(3)"])
    assert seeds_global_random(["import numpy.random as npr\nnpr.seed(3)"])
    assert seeds_global_random(["import torch\ntorch.manual_seed(3)"])
    assert seeds_global_random(["import numpy\nif True:\n    numpy.random.seed(3)"])
    # a generator object, a user's own seed(), an unseeded draw: no sequence to keep
    assert not seeds_global_random(["import numpy as np\nrng = np.random.default_rng(0)"])
    assert not seeds_global_random(["def seed(n):\n    pass\nseed(0)"])
    assert not seeds_global_random(["import numpy as np\nx = np.random.rand()"])
    assert not seeds_global_random(["%matplotlib inline\nimport random", "random.random("])


SEEDED = [
    (["imports"], "import numpy as np\nnp.random.seed(0)"),
    (["step:a"], "a = float(np.random.rand())"),
    (["step:b"], "b = float(np.random.rand())"),
    (["step:c"], "c = a + 1"),
]


def test_each_step_of_a_seeded_notebook_continues_the_one_before(tmp_path):
    spec = spec_of(tmp_path, SEEDED)
    assert dict(spec.step("b").inputs) == {RANDOM_STATE: "a"}
    assert RANDOM_STATE in spec.step("a").outputs
    assert dict(spec.step("c").inputs) == {"a": "a", RANDOM_STATE: "b"}
    assert RANDOM_STATE not in spec.step("c").outputs  # nothing after it
    text = render_step(spec.step("b"), spec.notebooks[0], spec)
    assert f"_mlops_nb.restore_random(_mlops_nb.load('a', {RANDOM_STATE!r}))" in text
    assert f"{RANDOM_STATE!r}: _mlops_nb.random_state()" in text


def test_an_unseeded_notebook_hands_no_random_state(tmp_path):
    spec = spec_of(tmp_path, [(tags, src.replace("np.random.seed(0)", ""))
                              for tags, src in SEEDED])
    assert all(RANDOM_STATE not in s.outputs for s in spec.steps)
    assert spec.step("b").upstream == ()  # independent steps stay independent


def test_a_step_that_must_run_before_its_notebook_predecessor_is_named(tmp_path, caplog):
    cells = [SEEDED[0], (["step:a", "prev:b"], "a = float(np.random.rand())"), SEEDED[2]]
    with caplog.at_level(logging.WARNING):
        spec = spec_of(tmp_path, cells)
    assert "step 'b' runs before step 'a'" in caplog.text and "nb.ipynb" in caplog.text
    assert RANDOM_STATE not in dict(spec.step("b").inputs)


# --- item 3: a string is not a path unless it names one -------------------------------------

def test_only_strings_that_name_a_file_or_a_folder_read_as_one_are_data(tmp_path):
    (tmp_path / "notebooks/imgs").mkdir(parents=True)
    (tmp_path / "notebooks/imgs/a.png").write_bytes(b"x")
    (tmp_path / "notebooks/data.csv").write_text("a\n1\n")
    spec = spec_of(tmp_path, [
        (["imports"], "import os\nimport pandas as pd"),
        (["step:report"], "x = 0.5\nprint(f'accuracy {x:.3f}.')\nsep = '.'\nhere = './'\n"
                          "label = 'imgs'"),
        (["step:slash"], "folder = 'imgs/'"),  # written as a folder: `path + 'a.png'`
        (["step:load"], "df = pd.read_csv('data.csv')\nfiles = os.listdir('imgs')"),
        (["step:named"], "SOURCE = 'data.csv'\nn = len(SOURCE)"),
    ])
    assert spec.step("report").data_deps == ()
    assert spec.step("slash").data_deps == ("notebooks/imgs",)
    assert spec.step("load").data_deps == ("notebooks/data.csv", "notebooks/imgs")
    assert spec.step("named").data_deps == ("notebooks/data.csv",)  # names an existing file


# --- item 4: a loop variable reused in a helper links nothing it did not touch ------------

def test_a_reused_loop_variable_does_not_make_a_constant_changed(tmp_path):
    spec = spec_of(tmp_path, [
        (["functions"], "KEYS = ['a', 'b']\n\n\ndef fill(d):\n    for key in KEYS:\n"
                        "        print(key)\n    for key in d:\n        d[key] = 1\n"
                        "    return d\n\n\ndef tag(rows):\n    for row in rows:\n"
                        "        r = row\n        r['seen'] = True\n    return rows"),
        (["step:a"], "d = fill({'x': 0})\ntable = [{'k': 1}]\nt = tag(table)"),
        (["step:b"], "n = len(KEYS) + len(d) + len(table)"),
    ])
    assert "KEYS" not in spec.step("a").outputs
    assert dict(spec.step("b").inputs).get("KEYS") is None  # the functions cell's own
    # a change through a loop variable still changes what it iterates over
    assert set(spec.step("a").outputs) == {"d", "table"}


# --- item 5: model libraries' objects cross steps in their own formats -----------------------

def test_xgboost_and_lightgbm_objects_round_trip_without_pickle(tmp_path):
    import json as jsonlib
    import shutil

    import lightgbm as lgb
    import numpy as np
    import xgboost as xgb

    from mlops_nb import artifacts

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X[0, 1] = np.nan
    y = (X[:, 0] > 0).astype(int)
    dm = xgb.DMatrix(X, label=y, weight=np.linspace(1, 2, 60), feature_names=["a", "b", "c"])
    booster = xgb.train({"max_depth": 2}, dm, num_boost_round=3)
    clf = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(X, y)
    lgb_booster = lgb.train({"verbose": -1, "num_leaves": 4}, lgb.Dataset(X, y),
                            num_boost_round=3)
    project = tmp_path / "proj"
    for name, obj, fmt in (("dm", dm, "xgboost-dmatrix"), ("bst", booster, "xgboost-json"),
                           ("clf", clf, "xgboost-json"), ("lgb", lgb_booster, "lightgbm-text")):
        folder = project / "outputs/s" / name
        artifacts.save(obj, folder, project=project)
        meta = jsonlib.loads((folder / "meta.json").read_text())
        assert meta["format"] == fmt
        # no pickle: a copy of the folder that this project never wrote loads all the same
        elsewhere = tmp_path / "elsewhere/outputs/s" / name
        elsewhere.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, elsewhere)
        back = artifacts.load(elsewhere, project=tmp_path / "elsewhere")
        assert type(back) is type(obj)
        again = project / "outputs/t" / name  # byte-reproducible: saved again, same bytes
        artifacts.save(back, again, project=project)
        if fmt != "xgboost-dmatrix":
            assert (again / meta["file"]).read_bytes() == (folder / meta["file"]).read_bytes()
    loaded = artifacts.load(project / "outputs/s/dm", project=project)
    assert loaded.feature_names == ["a", "b", "c"] and loaded.num_row() == 60
    assert np.array_equal(loaded.get_label(), dm.get_label())
    assert np.array_equal(loaded.get_weight(), dm.get_weight())
    test = xgb.DMatrix(X, feature_names=["a", "b", "c"])
    assert np.array_equal(artifacts.load(project / "outputs/s/bst", project=project).predict(
        test), booster.predict(test))
    assert np.array_equal(booster.predict(loaded), booster.predict(dm))
    clf_back = artifacts.load(project / "outputs/s/clf", project=project)
    assert np.array_equal(clf_back.predict_proba(X), clf.predict_proba(X))
    assert list(clf_back.classes_) == [0, 1]
    assert np.array_equal(artifacts.load(project / "outputs/s/lgb", project=project).predict(X),
                          lgb_booster.predict(X))


def test_lightgbm_scikit_learn_models_round_trip_without_pickle(tmp_path):
    """LGBMClassifier (string classes, a DataFrame's feature names), LGBMRegressor and
    LGBMRanker load from a folder this project never wrote, predicting exactly as before;
    one with a callable objective (which JSON cannot hold) goes to pickle and its trust rule."""
    import json as jsonlib
    import shutil

    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    import pytest

    from mlops_nb import artifacts
    from mlops_nb.errors import ArtifactError

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b c", "d'e"])
    labels = np.array(["cat", "dog", "emu"])[(X["a"] > 0).to_numpy().astype(int)
                                             + (X["b c"] > 1).to_numpy()]
    fitted = {
        "clf": lgb.LGBMClassifier(n_estimators=4, num_leaves=4, verbose=-1).fit(X, labels),
        "reg": lgb.LGBMRegressor(n_estimators=4, verbose=-1).fit(X.to_numpy(), X["a"] * 2),
        "rank": lgb.LGBMRanker(n_estimators=3, verbose=-1, min_child_samples=2).fit(
            X, (X["a"] > 0).astype(int), group=[40, 40]),
    }
    project = tmp_path / "proj"
    for name, model in fitted.items():
        folder = project / "outputs/s" / name
        artifacts.save(model, folder, project=project)
        assert jsonlib.loads((folder / "meta.json").read_text())["format"] == "lightgbm-sklearn"
        elsewhere = tmp_path / "elsewhere/outputs/s" / name
        shutil.copytree(folder, elsewhere)
        back = artifacts.load(elsewhere, project=tmp_path / "elsewhere")
        assert type(back) is type(model)
        data = X if name != "reg" else X.to_numpy()
        assert np.array_equal(back.predict(data), model.predict(data))
        assert back.get_params() == model.get_params()
    back = artifacts.load(project / "outputs/s/clf", project=project)
    assert np.array_equal(back.predict_proba(X), fitted["clf"].predict_proba(X))
    assert list(back.classes_) == ["cat", "dog", "emu"]
    assert list(back.feature_names_in_) == list(fitted["clf"].feature_names_in_)

    def objective(y_true, y_pred):
        return y_pred - y_true, np.ones_like(y_pred)

    custom = lgb.LGBMRegressor(n_estimators=2, objective=objective, verbose=-1).fit(
        X.to_numpy(), X["a"])
    folder = project / "outputs/s/custom"
    artifacts.save(custom, folder, project=project)
    assert jsonlib.loads((folder / "meta.json").read_text())["format"] in ("pickle",
                                                                           "cloudpickle")
    data = folder / jsonlib.loads((folder / "meta.json").read_text())["file"]
    data.write_bytes(data.read_bytes() + b" ")  # a pickle this user's runs did not write
    with pytest.raises(ArtifactError):
        artifacts.load(folder, project=project)


def test_outputs_of_other_types_never_import_the_model_libraries(tmp_path):
    import subprocess
    import sys

    code = ("import sys\nfrom pathlib import Path\nimport numpy as np\n"
            "from sklearn.linear_model import LogisticRegression\n"
            "from mlops_nb import artifacts\n"
            "p = Path(sys.argv[1])\n"
            "m = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])\n"
            "for i, v in enumerate([m, np.ones(3), {'a': 1}, object()]):\n"
            "    artifacts.save(v, p / 'outputs/s' / str(i), project=p)\n"
            "    artifacts.load(p / 'outputs/s' / str(i), project=p)\n"
            "assert not {'xgboost', 'lightgbm'} & set(sys.modules), sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)


def test_a_random_state_round_trips_and_a_foreign_one_is_a_clear_error():
    import random

    import numpy as np
    import pytest

    from mlops_nb.errors import ArtifactError
    from mlops_nb.execute import runtime

    np.random.seed(3)
    random.seed(4)
    state = runtime.random_state()
    want = (float(np.random.rand()), random.random())
    np.random.seed(99)
    random.seed(99)
    runtime.restore_random(json_round_trip(state))
    assert (float(np.random.rand()), random.random()) == want
    deep: list = []
    for _ in range(200):
        deep = [deep]
    for bad in (None, [1, 2], {"numpy": ["MT19937", [1, 2], 0, 0, 0.0]},
                {"random": "x\n'\""}, {"random": [3, deep, None]},
                {"numpy": ["MT19937", list(range(10**5)), 0, 0, 0.0]}):
        with pytest.raises(ArtifactError, match="rerun the step before it"):
            runtime.restore_random(bad)


def json_round_trip(value):
    import json

    return json.loads(json.dumps(value))


def test_dvc_lock_entries_are_judged_by_content_whatever_dvc_lock_holds(tmp_path):
    import hashlib
    import json

    from mlops_nb.execute.dvclock import record_built, stale_stages

    (tmp_path / "outputs/a").mkdir(parents=True)
    marker = tmp_path / "outputs/a/.mlops_nb-done.json"
    marker.write_text(json.dumps({"fingerprint": "f", "sealed": True}))
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  notebooks-compiled:\n    cmd: x\n    deps:\n    - params.yaml\n"
        "  a:\n    cmd: y\n    outs:\n    - outputs/a/.mlops_nb-done.json:\n"
        "        persist: true\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    md5 = hashlib.md5(marker.read_bytes()).hexdigest()
    params_md5 = hashlib.md5(b"{}\n").hexdigest()
    good = (f"stages:\n  notebooks-compiled:\n    deps:\n    - path: params.yaml\n"
            f"      md5: {params_md5}\n  a:\n    outs:\n"
            f"    - path: outputs/a/.mlops_nb-done.json\n      md5: {md5}\n")
    (tmp_path / "dvc.lock").write_text(good)
    assert stale_stages(tmp_path, ["a"]) == []
    for hostile in ("{{{not yaml", "- a\n- b\n", "stages: [1, 2]\n",
                    "stages:\n  a:\n    outs:\n    - path: \"x'\\n\"\n      md5: [1]\n",
                    "stages:\n  a: " + "[" * 500 + "]" * 500 + "\n", good.replace(md5, "0")):
        (tmp_path / "dvc.lock").write_text(hostile)
        assert "a" in stale_stages(tmp_path, ["a"]), hostile
    marker.write_text(json.dumps({"fingerprint": "f"}))  # never sealed: never committed
    assert "a" not in stale_stages(tmp_path, ["a"])
    assert record_built(tmp_path, ["a"]) == []  # not a DVC project: nothing to do
