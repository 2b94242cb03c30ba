"""The parameters widget: params.yaml as a form with a fitting control per value; queue one
experiment or a grid (`dvc exp run --queue`), then run the queue with progress. Values that
differ from the notebook's parameters cell are marked, with buttons that make them agree
(pipeline.paramsync, as `mlops-nb params sync`).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError
from mlops_nb.pipeline import paramsync
from mlops_nb.widgets import background, exp_queue
from mlops_nb.widgets import experiments as exp
from mlops_nb.widgets import parameters as par
from mlops_nb.widgets.render import html_message, html_table, text_table
from mlops_nb.widgets.views import View, one_line


class ParametersView(View):
    """params.yaml as a form; queue one experiment or a grid, then run the queue."""

    def __init__(self, root: Path, choices: dict[str, list[Any]] | None = None) -> None:
        super().__init__()
        self.root = root
        self.ran: list[exp_queue.Ran] = []  # the experiments of the last queue run
        self.drifts: list[paramsync.Drift] = []
        try:
            self.fields = par.read_fields(root, choices)
        except MlopsNbError as exc:
            self.fields, self.error = [], one_line(exc)
        self.reload_drifts()

    def reload_drifts(self) -> None:
        from mlops_nb import compile as compile_mod

        try:
            spec, _ = compile_mod.render(self.root)
            self.drifts = paramsync.project_drifts(self.root, spec.notebooks)
        except MlopsNbError:
            self.drifts = []  # compile, status and preview report what is wrong

    def _rows(self) -> list[list[Any]]:
        notebook = {d.key: d.in_notebook for d in self.drifts}
        return [[f.key, par.shown(f.value), f.kind,
                 par.shown(notebook[f.key]) if f.key in notebook else ""] for f in self.fields]

    def text(self) -> str:
        if self.error:
            return f"parameters: error: {self.error}"
        table = text_table(["parameter", "value", "control", "notebook says"], self._rows())
        return "\n".join([table, *paramsync.advice(self.drifts)])

    def html(self) -> str:
        if self.error:
            return html_message(f"parameters: error: {self.error}", error=True)
        return html_table(["parameter", "value", "control", "notebook says"], self._rows(),
                          css="mlops-params") + self.advice_html()

    def advice_html(self) -> str:
        """What differs from the notebooks, and how to make them agree ("" when nothing)."""
        return "".join(html_message(a, error=i == 0)
                       for i, a in enumerate(paramsync.advice(self.drifts)))

    def ran_html(self) -> str:
        """Each experiment of the last queue run with its state and, if it failed, why."""
        if not self.ran:
            return ""
        return html_table(["experiment", "state", "why"],
                          [[r.name, r.state, r.reason] for r in self.ran], css="mlops-ran")

    def _control(self, f: par.Field) -> Any:
        import ipywidgets as w

        style = {"description_width": "initial"}
        label = f.key
        if f.kind == "bool":
            return w.Checkbox(bool(f.value), description=label, indent=False)
        if f.kind == "int":
            return w.IntText(f.value, description=label, style=style)
        if f.kind == "float":  # a text box: FloatText shows 1.0 as "1"
            return w.Text(par.shown(f.value), description=label, style=style)
        if f.kind == "choice":
            return w.Dropdown(options=list(f.choices), value=f.value if f.value in f.choices
                              else f.choices[0], description=label, style=style)
        shown = f.value if isinstance(f.value, str) else json.dumps(f.value)
        return w.Text(shown, description=label, style=style)

    def build(self) -> Any:
        import ipywidgets as w

        controls = {f.key: self._control(f) for f in self.fields}
        axes = {f.key: w.Text(placeholder="grid: v1, v2, ...", layout=w.Layout(width="12em"))
                for f in self.fields}
        status = w.HTML("")
        bar = w.IntProgress(value=0, min=0, max=1, description="queue")
        queue_one = w.Button(description="Queue experiment")
        queue_grid = w.Button(description="Queue grid")
        run_q = w.Button(description="Run queue", button_style="primary")
        queued: list[str] = []

        def edited() -> dict[str, Any]:
            point = {}
            for f in self.fields:
                value = controls[f.key].value
                if f.kind in ("text", "float"):
                    value = par.parse_value(f, value)
                if value != f.value:
                    point[f.key] = value
            return point

        def enqueue(points: list[dict[str, Any]]) -> None:
            status.value = html_message(f"queueing {len(points)} experiment(s)...")

            def work() -> None:
                try:
                    for p in points:
                        queued.append(par.queue(self.root, p))
                        bar.max = max(bar.max, len(queued))
                    status.value = html_message(f"{len(queued)} queued; press Run queue")
                except MlopsNbError as exc:
                    status.value = html_message(one_line(exc), error=True)

            self.thread = threading.Thread(target=work, daemon=True)
            self.thread.start()

        def on_one(_: Any) -> None:
            try:
                enqueue([edited()])
            except MlopsNbError as exc:
                status.value = html_message(one_line(exc), error=True)

        def on_grid(_: Any) -> None:
            try:
                base = edited()
                spans = {f.key: par.parse_values(f, axes[f.key].value) for f in self.fields
                         if axes[f.key].value.strip()}
                points = [{**base, **p} for p in par.grid(self.fields, spans)]
                enqueue(points)
            except MlopsNbError as exc:
                status.value = html_message(one_line(exc), error=True)

        def on_run(_: Any) -> None:
            run_q.disabled = True
            started: list[str] = []
            bar.value, bar.max = 0, max(1, len(queued))
            status.value = html_message("running the queue...")

            def on_line(line: str) -> None:
                # DVC prints "Reproducing experiment 'NAME'" as each queued one starts
                name = par.started_experiment(line)
                if name:
                    started.append(name)
                    self.events.append((name, "running"))
                    bar.max = max(bar.max, len(started))  # experiments queued elsewhere too
                    bar.value = len(started) - 1
                    status.value = html_message(f"running {name} ({len(started)} of"
                                                f" {bar.max})")

            def on_exit(done: background.Finished) -> None:
                # DVC exits 0 when every task failed: the states say how it went
                ran: list[exp_queue.Ran] = []
                if done.ok:
                    try:
                        ran = exp_queue.outcome(self.root, started)
                    except MlopsNbError as exc:
                        done = background.Finished(done.command, 1, one_line(exc))
                run_q.disabled = False
                failed = [r for r in ran if r.state != exp.SUCCESS]
                self.ran = ran
                for r in ran:
                    self.events.append((r.name, r.state))
                if done.ok:
                    bar.value = bar.max
                    queued.clear()
                    status.value = html_message(f"{done.command}: {exp_queue.summary(ran)}",
                                                error=bool(failed)) + self.ran_html()
                else:
                    status.value = html_message(done.message(), error=True)
                self.events.append(("queue", "failed" if failed or not done.ok else "done"))

            self.thread = background.start(par.run_queue_command(), self.root,
                                           label="dvc exp run --run-all", on_line=on_line,
                                           on_exit=on_exit)

        differ = w.HTML(self.advice_html())
        to_nb = w.Button(description="params.yaml -> notebook",
                         layout=w.Layout(width="auto"))
        to_params = w.Button(description="notebook -> params.yaml",
                             layout=w.Layout(width="auto"))

        def sync(way: str) -> None:
            try:
                if way == "notebook":
                    wrote = ", ".join(paramsync.to_notebook(self.root, self.drifts))
                    msg = f"wrote {wrote}: reload it (File > Reload Notebook from Disk)"
                else:
                    paramsync.to_params(self.root, self.drifts)
                    msg = "wrote params.yaml"
                self.reload_drifts()
                status.value = html_message(msg)
            except MlopsNbError as exc:
                status.value = html_message(one_line(exc), error=True)
            differ.value = self.advice_html()
            to_nb.disabled = to_params.disabled = not self.drifts

        to_nb.on_click(lambda _: sync("notebook"))
        to_params.on_click(lambda _: sync("params"))
        to_nb.disabled = to_params.disabled = not self.drifts
        queue_one.on_click(on_one)
        queue_grid.on_click(on_grid)
        run_q.on_click(on_run)
        rows = [w.HBox([controls[f.key], axes[f.key]]) for f in self.fields]
        return w.VBox([*rows, differ, w.HBox([to_nb, to_params]),
                       w.HBox([queue_one, queue_grid, run_q, bar]), status])
