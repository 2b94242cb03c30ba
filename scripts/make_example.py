"""Write notebooks/iris.ipynb, the example project's tagged notebook (run once by hand).

Also writes notebooks/iris.schema.yaml, the data schema the `validate` step checks against,
when it does not exist yet (inferred from the whole data set; edit and commit it).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

cells = [
    new_markdown_cell("# Iris species classifier\n\nTagged for mlops_nb (Kale's tag language):"
                      " each `step:` cell starts a pipeline step."),
    (["imports"], "import json\n\nimport numpy as np\nimport pandas as pd\n"
     "from sklearn.datasets import load_iris\nfrom sklearn.ensemble import RandomForestClassifier\n"
     "from sklearn.metrics import accuracy_score, f1_score\n"
     "from sklearn.model_selection import train_test_split\n\nfrom mlops_nb import guards"),
    (["pipeline-parameters"], "N_ESTIMATORS = 100\nMAX_DEPTH = 4\nTEST_SIZE = 0.3\n"
     "RANDOM_STATE = 42\n"
     "DRIFT_THRESHOLD = 0.05  # KS/chi-square p-value below 1000 rows, distance above\n"
     "DATA_WARN_ONLY = False\nMIN_IMPROVEMENT = 0.0\nACCURACY_FLOOR = 0.8\n"
     "FAIL_IF_BLOCKED = False"),
    (["functions"], "FEATURES = ['sepal_length', 'sepal_width', 'petal_length',"
     " 'petal_width']\n\n\n"
     "def add_ratios(frame):\n    \"\"\"Ratio features that separate the species well.\"\"\"\n"
     "    frame['petal_ratio'] = frame['petal_length'] / frame['petal_width']\n"
     "    frame['sepal_ratio'] = frame['sepal_length'] / frame['sepal_width']\n"
     "    return frame"),
    (["step:load"], "iris = load_iris(as_frame=True)\n"
     "df = iris.frame.rename(columns=dict(zip(iris.feature_names, FEATURES)))\n"
     "df['species'] = df['target'].map(dict(enumerate(iris.target_names)))\n"
     "df.shape"),
    (["skip"], "df.describe()"),
    (["skip"], "df.groupby('species')[FEATURES].mean()"),
    (["step:prepare"], "add_ratios(df)\nX = df[FEATURES + ['petal_ratio', 'sepal_ratio']]\n"
     "y = df['target']"),
    ([], "X_train, X_test, y_train, y_test = train_test_split(\n"
     "    X, y, test_size=TEST_SIZE, random_state=RANDOM_STATE, stratify=y\n)\n"
     "len(X_train), len(X_test)"),
    (["step:validate"], "# held-out data against the schema and against the training data (drift)\n"
     "data_report = guards.validate_data(\n"
     "    X_test, reference=X_train, schema='iris.schema.yaml', name='iris_split',\n"
     "    drift=DRIFT_THRESHOLD, warn_only=DATA_WARN_ONLY,\n)\n"
     "data_report['status']"),
    (["step:train", "prev:validate"], "model = RandomForestClassifier(\n"
     "    n_estimators=N_ESTIMATORS, max_depth=MAX_DEPTH, random_state=RANDOM_STATE\n)\n"
     "model.fit(X_train, y_train)"),
    (["step:evaluate"], "pred = model.predict(X_test)\n"
     "accuracy = float(accuracy_score(y_test, pred))\n"
     "f1_macro = float(f1_score(y_test, pred, average='macro'))\n"
     "importances = dict(zip(X_train.columns, model.feature_importances_.round(4).tolist()))\n"
     "print(json.dumps({'accuracy': accuracy, 'f1_macro': f1_macro}, indent=2))"),
    (["skip"], "pd.Series(importances).sort_values().plot.barh();"),
    (["step:promote"], "# the candidate must beat the production model on the same test data\n"
     "decision = guards.promote_if_better(\n"
     "    model, {'accuracy': accuracy, 'f1_macro': f1_macro}, name='iris',\n"
     "    eval_data=(X_test, y_test), data_report=data_report, min_delta=MIN_IMPROVEMENT,\n"
     "    floors={'accuracy': ACCURACY_FLOOR}, fail_if_blocked=FAIL_IF_BLOCKED,\n)\n"
     "promoted = decision['promoted']\n"
     "print(decision['outcome'], decision['version'], *decision['reasons'], sep='\\n')"),
    (["pipeline-metrics"], "print(accuracy)\nprint(f1_macro)\nprint(promoted)"),
]
nb = new_notebook()
for c in cells:
    if isinstance(c, tuple):
        tags, src = c
        cell = new_code_cell(src)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    else:
        nb.cells.append(c)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
for i, cell in enumerate(nb.cells):
    cell["id"] = f"cell-{i}"
nbformat.write(nb, "notebooks/iris.ipynb")

schema_path = Path("notebooks/iris.schema.yaml")
if not schema_path.exists():
    from sklearn.datasets import load_iris

    from mlops_nb.guards.validation import schema as schema_mod

    FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    iris = load_iris(as_frame=True)
    X = iris.frame.rename(columns=dict(zip(iris.feature_names, FEATURES, strict=True)))
    X = X[FEATURES]
    X["petal_ratio"] = X["petal_length"] / X["petal_width"]
    X["sepal_ratio"] = X["sepal_length"] / X["sepal_width"]
    schema_mod.save(schema_mod.infer(X, min_rows=10), schema_path)
