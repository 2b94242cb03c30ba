"""Data dependencies between steps: what a step reads, changes and hands on."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_nb.errors import NotebookError, PipelineError
from mlops_nb.notebook.aliasing import AliasGroups
from mlops_nb.notebook.analysis import BUILTINS, analyse_block
from mlops_nb.notebook.magics import strip_magics
from mlops_nb.notebook.sections import literal_names, metric_names
from mlops_nb.notebook.tags import parse_notebook
from mlops_nb.pipeline.spec import build_spec
from tests.conftest import make_nb


def block(src: str, funcs=None):
    return analyse_block(src, funcs if funcs is not None else {}, AliasGroups(), set())


def spec_of(tmp_path: Path, cells, name="nb"):
    path = make_nb(tmp_path / "notebooks" / f"{name}.ipynb", cells)
    return build_spec([parse_notebook(path, f"notebooks/{name}.ipynb")], tmp_path)


def test_reads_before_writes_are_inputs():
    info = block("y = x + 1\nz = y\nx = 2")
    assert info.inputs == {"x"}
    assert {"x", "y", "z"} <= info.writes


def test_method_call_and_item_assignment_change_a_name():
    info = block("df['c'] = 1\nlst.append(3)\nmodel.fit(X, y)")
    assert {"df", "lst", "model"} <= info.mutated
    assert "X" not in info.mutated and "y" not in info.mutated


def test_change_through_an_alias_changes_the_original():
    info = analyse_block("a = df\na['new'] = 1", {}, AliasGroups(), set())
    assert "df" in info.mutated


def test_module_calls_do_not_change_the_module():
    imported: set[str] = set()
    src = "import numpy as np\nx = np.zeros(3)\nnp.random.seed(0)"
    info = analyse_block(src, {}, AliasGroups(), imported)
    assert "np" not in info.mutated


def test_functions_read_their_globals_when_called():
    funcs: dict = {}
    analyse_block("def score():\n    return model.predict(X_test)\n", funcs, AliasGroups(), set())
    info = block("s = score()", funcs)
    assert {"model", "X_test", "score"} <= info.inputs


def test_user_function_arguments_count_as_changed():
    funcs: dict = {}
    analyse_block("def clean(frame):\n    frame['a'] = 0\n", funcs, AliasGroups(), set())
    info = block("clean(df)", funcs)
    assert "df" in info.mutated


def test_magics_and_shell_escapes_do_not_crash():
    src = "%matplotlib inline\n!ls -la\nfiles = !ls\n%time x = f(1)\ny = 2\nhelp?"
    info = block(src)
    assert {"files", "x", "y"} <= info.writes
    assert "f" in info.inputs
    assert strip_magics("%%bash\necho hi") == "\n"
    assert strip_magics("%%capture --no-stderr out\nx = 1") == "out = None\nx = 1"


def test_comprehension_variables_are_not_inputs():
    info = block("out = [i * k for i in range(3)]")
    assert info.inputs - BUILTINS == {"k"}


def test_parameters_cell_only_literals():
    assert [n for n, _ in literal_names("A = 1\nB: float = -0.5\nC = [1, 'x']\n")] == [
        "A", "B", "C"]
    with pytest.raises(ValueError, match="line 2: the value of B is not a literal"):
        literal_names("A = 1\nB = A * 2")
    with pytest.raises(ValueError, match="line 1: only 'NAME = literal'"):
        literal_names("import os")


def test_metric_names():
    assert metric_names("print(acc)\nprint(f1, loss)\nauc") == ["acc", "f1", "loss", "auc"]


def test_names_flow_across_several_steps(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "x = 1\ny = 2"),
        (["step:b"], "z = y + 1"),
        (["step:c"], "w = x + z"),
    ])
    assert spec.step("a").outputs == ("x", "y")
    assert spec.step("c").inputs == (("x", "a"), ("z", "b"))
    assert spec.step("c").upstream == ("a", "b")


def test_changed_name_is_read_from_the_step_that_changed_it(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "df = {'a': 1}"),
        (["step:b"], "alias = df\nalias['b'] = 2"),
        (["step:c"], "n = len(df)"),
    ])
    assert spec.step("c").inputs == (("df", "b"),)
    assert "df" in spec.step("b").outputs


def test_function_defined_in_a_step_is_copied_not_pickled(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "import math\ndef double(v):\n    return 2 * v\nbase = 3"),
        (["step:b"], "r = double(base) + math.pi"),
    ])
    b = spec.step("b")
    assert dict(b.copied_defs)["double"].startswith("def double")
    assert dict(b.copied_defs)["math"] == "import math"
    assert spec.step("a").outputs == ("base",)


def test_parameters_reach_the_steps_that_use_them(tmp_path):
    spec = spec_of(tmp_path, [
        (["pipeline-parameters"], "LR = 0.1\nSEED = 1"),
        (["functions"], "def noise():\n    return SEED"),
        (["step:a"], "x = LR"),
        (["step:b"], "y = noise() + x"),
    ])
    assert spec.step("a").params == ("LR",)
    assert spec.step("b").params == ("SEED",)


def test_unknown_prev_names_the_nearest_step(tmp_path):
    with pytest.raises(NotebookError, match="cell 2: 'prev:trian' names no step .*prev:train"):
        spec_of(tmp_path, [(["step:train"], "x = 1"), (["step:test", "prev:trian"], "y = 1")])


def test_cycle_lists_its_steps(tmp_path):
    with pytest.raises(PipelineError, match="cycle.*a .*b "):
        spec_of(tmp_path, [(["step:a", "prev:b"], "x = 1"), (["step:b"], "y = x")])


def test_duplicate_step_across_notebooks(tmp_path):
    p1 = make_nb(tmp_path / "notebooks/one.ipynb", [(["step:a"], "x = 1")])
    p2 = make_nb(tmp_path / "notebooks/two.ipynb", [(["step:a"], "y = 1")])
    with pytest.raises(NotebookError, match="two.ipynb cell 1: step 'a' is also defined in"
                                            " notebooks/one.ipynb cell 1"):
        build_spec([parse_notebook(p1, "notebooks/one.ipynb"),
                    parse_notebook(p2, "notebooks/two.ipynb")], tmp_path)


def test_prev_across_notebooks(tmp_path):
    p1 = make_nb(tmp_path / "notebooks/one.ipynb", [(["step:a"], "x = 1")])
    p2 = make_nb(tmp_path / "notebooks/two.ipynb", [(["step:b", "prev:a"], "y = 1")])
    spec = build_spec([parse_notebook(p2, "notebooks/two.ipynb"),
                       parse_notebook(p1, "notebooks/one.ipynb")], tmp_path)
    assert [s.name for s in spec.steps] == ["a", "b"]


def test_literal_data_files_become_dependencies(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data/raw.csv").write_text("a\n1\n")
    spec = spec_of(tmp_path, [
        (["step:a"], "import pandas as pd\ndf = pd.read_csv('../data/raw.csv')\n"
                     "df.to_csv('../data/clean.csv')"),
        (["step:b"], "import pandas as pd\nd2 = pd.read_csv('../data/clean.csv')"),
    ])
    assert spec.step("a").data_deps == ("data/raw.csv",)
    assert spec.step("b").upstream == ("a",)


def test_syntax_error_names_the_cell(tmp_path):
    with pytest.raises(NotebookError, match="cell 2: Python syntax error on line 1"):
        spec_of(tmp_path, [(["step:a"], "x = 1"), ([], "y = (")])


def test_metric_not_set_by_any_step(tmp_path):
    with pytest.raises(NotebookError, match="cell 2: metric 'acc' is neither set by a step"):
        spec_of(tmp_path, [(["step:a"], "x = 1"), (["pipeline-metrics"], "print(acc)")])


def test_star_import_in_a_step_reaches_later_steps(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "from math import *\nx = sqrt(4)"),
        (["step:b"], "y = floor(x)"),
    ])
    assert dict(spec.step("b").copied_defs)["*math"] == "from math import *"


def test_change_through_a_container_and_a_loop_changes_its_members(tmp_path):
    # Kale's Titanic example: the frames are changed through the list that holds them
    spec = spec_of(tmp_path, [
        (["step:load"], "train_df = {'a': 1}\ntest_df = {'a': 2}"),
        (["step:prep"], "data = [train_df, test_df]\nfor dataset in data:\n"
                        "    dataset['b'] = dataset['a'] * 2"),
        (["step:use"], "s = train_df['b'] + test_df['b']"),
    ])
    assert spec.step("use").inputs == (("test_df", "prep"), ("train_df", "prep"))


def test_rebinding_leaves_the_alias_group(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "df = {'x': 1}"),
        (["step:b"], "view = df\nview = {'y': 2}\nview['z'] = 3"),
        (["step:c"], "n = len(df) + len(view)"),
    ])
    assert dict(spec.step("c").inputs)["df"] == "a"


# --- issue 15: Python 3 scopes, order inside compound statements, call-time globals ---

def test_comprehension_variable_passed_to_a_helper_is_not_a_name_of_the_block():
    funcs: dict = {}
    analyse_block("def helper(v):\n    v.append(1)\n", funcs, AliasGroups(), set())
    info = block("out = [helper(q) for q in [[], []]]\nfr = [helper(d) for d in frames]", funcs)
    assert "q" not in info.writes | info.inputs and "d" not in info.writes
    assert "frames" in info.mutated  # what the comprehension iterates over is changed


def test_name_bound_before_read_inside_a_compound_statement_is_not_an_input():
    info = block("for i in range(3):\n    img = i * 2\n    print(img)\n"
                 "with open('f') as fh:\n    text = fh.read()\n    n = len(text)\n"
                 "if n:\n    a = 1\nelse:\n    a = 2\nb = a")
    assert info.inputs - BUILTINS == set()
    # a loop body may not run: what it binds is still an input of the code after it
    assert block("for i in r:\n    late = i\nprint(late)").inputs - BUILTINS == {"r", "late"}


def test_def_defaults_are_read_when_the_def_runs():
    funcs: dict = {}
    info = analyse_block("def f(x, n=N):\n    return x * n\n", funcs, AliasGroups(), set())
    assert info.inputs == {"N"} and funcs["f"].def_reads == {"N"}


def test_lambda_is_a_definition_reading_globals_when_called():
    funcs: dict = {}
    info = analyse_block("scale = lambda v: v * K\n", funcs, AliasGroups(), set())
    assert "scale" in info.code_defs and info.inputs == set()
    assert "K" in block("y = scale(2)", funcs).inputs


@pytest.mark.parametrize("src", [
    "m = df.mean()", "for k, v in d.items():\n    pass", "p = s.split('.')",
    "r = df.to_dict()", "y = model.predict(X)", "c = df.copy()", "t = df.dropna()",
    "z = arr.sum(axis=0)", "u = df['a'].value_counts()",
])
def test_well_known_read_methods_do_not_change_their_receiver(src):
    assert block(src).mutated == set()


@pytest.mark.parametrize("src,name", [
    ("model.fit(X, y)", "model"), ("df.drop(columns=['a'], inplace=True)", "df"),
    ("lst.append(1)", "lst"), ("d.update(e)", "d"), ("arr.sort()", "arr"),
    ("obj.unknown_method()", "obj"), ("est.set_params(C=1)", "est"),
])
def test_mutating_and_unknown_methods_change_their_receiver(src, name):
    assert name in block(src).mutated


def test_user_function_changes_an_argument_only_if_its_body_does():
    funcs: dict = {}
    analyse_block("def stats(frame, n):\n    return frame.mean() * n\n"
                  "def clean(frame):\n    f = frame\n    f['a'] = 0\n"
                  "def both(a, b):\n    clean(b)\n", funcs, AliasGroups(), set())
    info = block("s = stats(df, k)\nclean(other)\nboth(x, y)", funcs)
    assert info.mutated == {"other", "y"}


def test_immutable_values_never_change():
    info = block("n = 3\nname = 'a'\nn += 1\nfor i in range(n):\n    n += i\nt = (1, 'x')\n"
                 "name.upper()")
    assert info.mutated == set()


def test_slice_of_a_list_is_a_copy_not_an_alias():
    aliases = AliasGroups()
    analyse_block("xs = [1, 2, 3]\nhead = xs[:2]\nhead.append(4)", {}, aliases, set())
    assert "xs" not in aliases.members("head")


def test_parameter_as_metric_and_parameter_read_is_a_parameter(tmp_path):
    spec = spec_of(tmp_path, [
        (["pipeline-parameters"], "LR = 0.1"),
        (["step:a"], "x = LR * 2\nLR.as_integer_ratio()"),
        (["step:b"], "y = LR + x"),
        (["pipeline-metrics"], "print(y)\nprint(LR)"),
    ])
    assert spec.step("b").inputs == (("x", "a"),)
    assert spec.step("b").params == ("LR",) and spec.step("b").metrics == ("y", "LR")


def test_copied_def_brings_what_its_defaults_read(tmp_path):
    spec = spec_of(tmp_path, [
        (["pipeline-parameters"], "N = 2"),
        (["step:a"], "base = 5\ndef f(x, n=N, b=base):\n    return x * n + b"),
        (["step:b"], "y = f(1)"),
    ])
    b = spec.step("b")
    assert "f" in dict(b.copied_defs) and b.params == ("N",) and b.inputs == (
        ("base", "a"), ("f", "a"))


def test_two_branches_reading_a_shared_frame_have_no_edge(tmp_path):
    spec = spec_of(tmp_path, [
        (["functions"], "def summary(frame, k):\n    return frame.describe().iloc[:k]"),
        (["step:load"], "import pandas as pd\ndf = pd.DataFrame({'a': [1.0, 2.0]})"),
        (["step:left"], "m = df.mean()\ns1 = summary(df, 2)"),
        (["step:right"], "v = df['a'].std()\ns2 = summary(df, 1)\nfor k, col in df.items():\n"
                         "    print(k, col.max())"),
        (["step:join"], "out = (m, v, s1, s2)"),
    ])
    assert spec.step("left").upstream == ("load",) and spec.step("right").upstream == ("load",)
    assert spec.step("left").outputs == ("m", "s1") and spec.step("right").outputs == ("s2", "v")
    assert spec.step("load").outputs == ("df",)


def test_undefined_name_is_a_compile_error_with_the_nearest_name(tmp_path):
    with pytest.raises(NotebookError, match="cell 2: line 2: undefined name 'modle'"
                                            r" \(did you mean 'model'\?\)"):
        spec_of(tmp_path, [(["step:a"], "model = 1"), (["step:b"], "x = 1\ny = modle + x")])


def test_undefined_name_is_a_warning_when_names_are_bound_dynamically(tmp_path, caplog):
    spec_of(tmp_path, [(["step:a"], "from math import *\nx = 1"), (["step:b"], "y = cos(x)")])
    spec_of(tmp_path, [(["step:a"], "globals()['z'] = 1"), (["step:b"], "y = z")])
    assert "undefined name 'z'" in caplog.text


def test_reading_what_only_a_later_step_defines_names_both_cells(tmp_path):
    with pytest.raises(NotebookError, match="cell 1: line 1: step 'a' reads 'w', which only"
                                            r" step 'b' \(cell 2\) defines"):
        spec_of(tmp_path, [(["step:a"], "x = w"), (["step:b"], "w = 1")])


def test_function_globals_are_read_where_it_is_called(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "K = 1\ndef f(v):\n    return v * K\ng = lambda v: v + K"),
        (["step:b"], "K = 10"),
        (["step:c"], "y = f(2) + g(2)"),
    ])
    c = spec.step("c")
    assert dict(c.inputs)["K"] == "b" and {"f", "g"} <= set(dict(c.copied_defs))


def test_three_model_branches_of_kales_dog_breed_example_stay_parallel(tmp_path):
    # the shape of Kale's dog-breed example: three CNN branches after detect_dogs, which
    # read the shared data through helpers, comprehensions, slices and fit/predict
    spec = spec_of(tmp_path, [
        (["imports"], "import os\nimport numpy as np\nimport cv2\nfrom glob import glob\n"
                      "from keras.models import Sequential\nfrom keras.layers import Dense"),
        (["pipeline-parameters"], "nodes_number = 256"),
        (["block:load_data"], "def load_dataset(path):\n    return np.array([path]), np.zeros(1)\n"
                              "train_files, train_targets = load_dataset('train')\n"
                              "test_files, test_targets = load_dataset('test')\n"
                              "dog_names = [item[20:-1] for item in sorted(glob('d/*/'))]"),
        ([], "dog_files_short = train_files[:100]"),
        (["block:detect_dogs", "prev:load_data"], "ResNet50_mod = Sequential()"),
        ([], "def path_to_tensor(img_path):\n    return np.expand_dims(cv2.imread(img_path), 0)\n"
             "def paths_to_tensor(img_paths):\n"
             "    return np.vstack([path_to_tensor(p) for p in img_paths])"),
        ([], "def dog_detector(img_path):\n"
             "    prediction = np.argmax(ResNet50_mod.predict(path_to_tensor(img_path)))\n"
             "    return (prediction <= 268) & (prediction >= 151)"),
        ([], "n_dog = np.sum([dog_detector(img) for img in dog_files_short])"),
        (["block:cnn_from_scratch", "prev:detect_dogs"],
         "train_tensors = paths_to_tensor(train_files).astype('float32') / 255\n"
         "test_tensors = paths_to_tensor(test_files).astype('float32') / 255"),
        (["block:"], "model = Sequential()\nmodel.add(Dense(133))\nepochs = 1\n"
                     "os.makedirs('saved', exist_ok=True)\n"
                     "model.fit(train_tensors, train_targets, epochs=epochs)\n"
                     "preds = [np.argmax(model.predict(np.expand_dims(t, 0))) for t in"
                     " test_tensors]\ntest_accuracy = np.sum(np.array(preds) =="
                     " np.argmax(test_targets, axis=1))"),
        (["block:cnn_vgg16", "prev:detect_dogs"],
         "bottleneck_features = np.load('b.npz')\ntrain_VGG16 = bottleneck_features['train']"),
        (["block:"], "VGG16_model = Sequential()\nVGG16_model.fit(train_VGG16, train_targets)\n"
                     "img_path = test_files[0]\ngtruth = np.argmax(test_targets[0])\n"
                     "gtruth = dog_names[gtruth].split('.')[-1]\n"
                     "test_accuracy = VGG16_model.score(train_VGG16, train_targets)"),
        (["block:cnn_resnet50", "prev:detect_dogs"],
         "bottleneck_features = np.load('r.npz')\ntrain_ResNet50 = bottleneck_features['train']"),
        ([], "ResNet50_model = Sequential()\nResNet50_model.add(Dense(int(nodes_number)))\n"
             "ResNet50_model.fit(train_ResNet50, train_targets)\n"
             "test_accuracy_resnet = ResNet50_model.score(train_ResNet50, train_targets)"),
        (["pipeline-metrics"], "print(test_accuracy_resnet)"),
    ])
    for branch in ("cnn_from_scratch", "cnn_vgg16", "cnn_resnet50"):
        assert set(spec.step(branch).upstream) <= {"load_data", "detect_dogs"}, branch
    assert spec.step("detect_dogs").outputs == ()  # its defs are copied, not saved
    # a numpy slice is a view: saved with what it views, so they stay shared
    assert spec.step("load_data").outputs == ("dog_files_short+train_files", "dog_names",
                                              "test_files", "test_targets", "train_targets")


def test_item_assignment_into_a_frame_copies_the_values_in():
    aliases = AliasGroups()
    imported: set[str] = set()
    analyse_block("import pandas as pd\nfrom sklearn.datasets import load_iris\n"
                  "iris = load_iris()\ndf = pd.DataFrame(iris.data)\ndf['t'] = iris.target\n"
                  "d = {}\nd['t'] = iris.target", {}, aliases, imported)
    assert "iris" not in aliases.members("df")
    assert "iris" in aliases.members("d")  # a dict holds what it is given


@pytest.mark.parametrize("src,inputs", [
    ("try:\n    v = f0()\nexcept ValueError as e:\n    print(e)\nelse:\n    print(v)", {"f0"}),
    ("try:\n    pass\nfinally:\n    w = 1\nprint(w)", set()),
    ("try:\n    t = 1\nexcept Exception:\n    pass\nprint(t)", {"t"}),  # may be unbound
    ("while cond:\n    k = 1\n    print(k)", {"cond"}),
    ("match cmd:\n    case [x, y] if x > lim:\n        print(x, y)", {"cmd", "lim"}),
    ("with a() as (p, q), b(p) as r:\n    print(p, q, r)", {"a", "b"}),
    ("for i in r:\n    def g(u):\n        loc = u + i\n        return loc + glob\n", {"r", "glob"}),
    ("if c:\n    z = 1\nprint(z)", {"c", "z"}),
    ("if c:\n    import signal\n    signal.getsignal(2)", {"c"}),
    ("if c:\n    import signal\nsignal.getsignal(2)", {"c", "signal"}),  # may be unbound
    ("[y := v for v in data]\nprint(y)", {"data"}),
    ("total = sum(x for x in xs if x > cut)", {"xs", "cut"}),
])
def test_inputs_follow_python_order_of_execution(src, inputs):
    assert block(src).inputs - BUILTINS == inputs


def test_stores_in_a_nested_def_are_not_the_blocks_names():
    info = block("for i in range(2):\n    def g(u):\n        inner = u\n        return inner\n")
    assert "inner" not in info.writes and "g" in info.writes


def test_name_defined_only_in_a_skip_cell_says_so(tmp_path):
    with pytest.raises(NotebookError, match="cell 3: line 1: undefined name 'peek': only cell"
                                            " 2, which is not part of the pipeline"):
        spec_of(tmp_path, [(["step:a"], "x = 1"), (["skip"], "peek = x"), (["step:b"], "y = peek")])


def test_a_numpy_view_is_an_alias():
    info = analyse_block("flat = arr.reshape(-1)\nflat[0] = 5\nv = np.asarray(other)\nv += 1",
                         {}, AliasGroups(), set())
    assert {"arr", "other"} <= info.mutated


def test_functions_and_lambdas_inside_containers_read_globals_when_called(tmp_path):
    spec = spec_of(tmp_path, [
        (["step:a"], "K = 1\ndef f(x):\n    return x * K\nfs = {'f': f}\n"
                     "fs['g'] = lambda x: x + M\nM = 2"),
        (["step:b"], "K = 10"),
        (["step:c"], "alias = fs\nr = alias['f'](1)"),
    ])
    c = spec.step("c")
    assert dict(c.inputs) == {"K": "b", "M": "a", "f": "a", "fs": "a"}
    assert c.rebind == ("fs",) and "f" in dict(c.copied_defs)


def test_adopt_gives_loaded_functions_the_steps_globals():
    from mlops_nb.runtime import adopt

    made: dict = {"K": 1}
    exec("fs = {'g': lambda x: x + K, 'l': [lambda: K]}\nt = (lambda: K,)", made)
    here = {"K": 10}
    fs = adopt(made["fs"], here)
    assert fs["g"](1) == 11 and fs["l"][0]() == 10 and adopt(made["t"], here)[0]() == 10


@pytest.mark.parametrize("src", [
    # the issue's case: a name bound by an import in a branch, read in that branch
    "import os\nif os.environ.get('X'):\n    import signal\n    signal.getsignal(2)\n",
    # the usual fallback import, read after the try
    "try:\n    import ujson as json\nexcept ImportError:\n    import json\nprint(json.dumps(1))",
    # bound in a branch only (may be unbound at run time, as pyflakes allows)
    "import os\nif os.environ.get('X'):\n    from signal import getsignal\nif os.environ.get('X'):"
    "\n    getsignal(2)",
    "if len('ab') == 2:\n    k = 1\nprint(k)",
])
def test_a_name_the_step_binds_in_a_branch_is_not_undefined(tmp_path, src):
    spec = spec_of(tmp_path, [(["step:a"], "x = 1"), (["step:b"], src)])
    assert spec.step("b").inputs == ()


@pytest.mark.parametrize("src,name", [
    ("print(k)\nif len('ab') == 2:\n    k = 1", "k"),  # read before any binding
    ("sq = [v * v for v in range(3)]\nprint(v)", "v"),  # a comprehension's own variable
    ("def f():\n    import signal\n    return 1\nsignal.getsignal(2)", "signal"),  # a local
])
def test_a_name_read_before_the_step_binds_it_is_still_undefined(tmp_path, src, name):
    with pytest.raises(NotebookError, match=f"cell 2: line \\d+: undefined name '{name}'"):
        spec_of(tmp_path, [(["step:a"], "x = 1"), (["step:b"], src)])


@pytest.mark.parametrize("code", [
    "pathlib.Path('started').write_text('1')",
    "Path('out.bin').write_bytes(b'')",
    "Path('flag').touch()",
    "with Path('log.txt').open('a') as f:\n    f.write('x')",
])
def test_a_file_written_through_a_path_object_is_a_write_not_a_read(code: str):
    info = analyse_block("import pathlib\nfrom pathlib import Path\n" + code, {}, AliasGroups(),
                         set())
    assert len(info.written_literals) == 1
    assert info.written_literals <= info.literals


def test_a_folder_globbed_through_a_path_object_is_read_and_a_flag_file_is_not(tmp_path: Path):
    (tmp_path / "notebooks" / "imgs").mkdir(parents=True)
    (tmp_path / "notebooks" / "go").write_text("")
    from tests.conftest import make_nb

    path = make_nb(tmp_path / "notebooks" / "nb.ipynb", [
        (["step:a"], "import pathlib\nfiles = sorted(pathlib.Path('imgs').glob('*.png'))\n"
                     "ready = pathlib.Path('go').exists()")])
    spec = build_spec([parse_notebook(path, "notebooks/nb.ipynb")], tmp_path)
    assert spec.step("a").data_deps == ("notebooks/imgs",)
