"""The experiments widget: `dvc exp show` as a table to filter and sort, compare with the
baseline, plot a metric against a parameter, apply or remove an experiment (DVC does both),
and read a queued experiment's log (`dvc queue logs`). Each experiment shows its state
(queued, running, success, failed); a failed one shows no metrics.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError
from mlops_nb.widgets import exp_queue
from mlops_nb.widgets import experiments as exp
from mlops_nb.widgets.render import html_message, html_table, scatter_svg, text_table
from mlops_nb.widgets.views import View, one_line


class ExperimentsView(View):
    """`dvc exp show` as a table to filter and sort; compare, plot, apply, remove."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.rows: list[exp.ExpRow] = []
        self.query, self.sort_by, self.descending = "", "", False
        self.reload()

    def reload(self) -> None:
        try:
            self.rows = exp.load(self.root)
            self.error = ""
        except MlopsNbError as exc:
            self.rows, self.error = [], one_line(exc)

    def shown(self) -> list[exp.ExpRow]:
        rows = exp.filter_rows(self.rows, self.query)
        return exp.sort_rows(rows, self.sort_by, descending=self.descending) if self.sort_by \
            else rows

    def text(self) -> str:
        if self.error:
            return f"experiments: error: {self.error}"
        failed = self.failures()
        return text_table(*exp.table(self.shown())) + (f"\n{failed}" if failed else "")

    def html(self) -> str:
        if self.error:
            return html_message(f"experiments: error: {self.error}", error=True)
        rows = self.shown()
        header, body = exp.table(rows)
        failed = self.failures()
        return html_table(header, body, css="mlops-exp",
                          row_classes=["base" if r.kind != "experiment" else
                                       "failed" if r.failed else "" for r in rows]) + (
            html_message(failed, error=True) if failed else "")

    def build(self) -> Any:
        import ipywidgets as w

        params, metrics = exp.columns(self.rows)
        table = w.HTML(self.html())
        status = w.HTML("")
        filt = w.Text(placeholder="filter: accuracy>0.9, iris.MAX_DEPTH=4, name",
                      continuous_update=False, layout=w.Layout(width="40%"))
        sort = w.Dropdown(options=["", "name", *metrics, *params], description="sort by")
        desc = w.Checkbox(False, description="descending", indent=False)
        pick = w.SelectMultiple(options=self._names(), rows=6, description="select")
        compare, apply_b, remove_b, refresh, log_b = (
            w.Button(description=d) for d in ("Compare", "Apply", "Remove", "Refresh", "Log"))
        result = w.HTML("")
        metric = w.Dropdown(options=metrics, description="metric")
        param = w.Dropdown(options=exp.by_variation(self.rows, params), description="parameter")
        plot = w.HTML("")

        def redraw(_: Any = None) -> None:
            self.query, self.sort_by, self.descending = filt.value, sort.value, desc.value
            table.value = self.html()
            pick.options = self._names()
            if metric.value and param.value:
                plot.value = scatter_svg(exp.plot_points(self.shown(), metric.value,
                                                         param.value), param.value, metric.value)

        def on_compare(_: Any) -> None:
            try:
                result.value = self.compare_html(list(pick.value))
            except MlopsNbError as exc:
                result.value = html_message(one_line(exc), error=True)

        def in_background(label: str, action: Any) -> None:
            status.value = html_message(f"{label}...")

            def work() -> None:
                try:
                    msg = action()
                    self.reload()
                    redraw()
                    status.value = html_message(msg)
                except MlopsNbError as exc:
                    status.value = html_message(one_line(exc), error=True)

            self.thread = threading.Thread(target=work, daemon=True)
            self.thread.start()

        def on_apply(_: Any) -> None:
            if len(pick.value) != 1:
                status.value = html_message("select exactly one experiment to apply", error=True)
                return
            in_background("applying", lambda: exp.apply(self.root, pick.value[0]))

        def on_log(_: Any) -> None:
            if len(pick.value) != 1:
                status.value = html_message("select exactly one experiment to see its log",
                                            error=True)
                return
            try:
                result.value = self.log_html(pick.value[0])
            except MlopsNbError as exc:
                result.value = html_message(one_line(exc), error=True)

        def on_remove(_: Any) -> None:
            names = [n for n in pick.value if self._kind(n) == "experiment"]
            if not names:
                status.value = html_message("select experiments (not commits) to remove",
                                            error=True)
                return
            in_background("removing", lambda: exp.remove(self.root, names))

        for control in (filt, sort, desc, metric, param):
            control.observe(redraw, names="value")
        compare.on_click(on_compare)
        apply_b.on_click(on_apply)
        remove_b.on_click(on_remove)
        log_b.on_click(on_log)
        refresh.on_click(lambda _: in_background("refreshing", lambda: "refreshed"))
        redraw()
        buttons = w.VBox([compare, apply_b, remove_b, refresh, log_b])
        return w.VBox([w.HBox([filt, sort, desc]), table, w.HBox([pick, buttons]), status,
                       result, w.HBox([metric, param]), plot])

    def _names(self) -> list[str]:
        return [r.name for r in self.shown() if r.kind != "workspace"]

    def _kind(self, name: str) -> str:
        return next((r.kind for r in self.rows if r.name == name), "")

    def log_html(self, name: str) -> str:
        """The experiment's queue log, with the line that says why it failed first."""
        import html

        text = exp_queue.log(self.root, name)
        state = next((r.state for r in self.rows if r.name == name), "")
        head = f"{name}: {state}" + (f": {exp_queue.reason(text)}" if state == exp.FAILED
                                      else "")
        return html_message(head, error=state == exp.FAILED) + \
            f'<pre class="mlops-log">{html.escape(text)}</pre>'

    def failures(self) -> str:
        """`N of M experiments failed`, or "" when none did."""
        runs = [r for r in self.rows if r.kind == "experiment"]
        bad = [r.name for r in runs if r.failed]
        return f"{len(bad)} of {len(runs)} experiments failed: {', '.join(bad)}" if bad else ""

    def compare_html(self, names: list[str]) -> str:
        base, chosen, diffs = exp.compare(self.rows, names)
        header = ["column", f"{base.name} (baseline)"]
        for r in chosen:
            header += [r.name, "change"]
        body = []
        for d in diffs:
            row: list[Any] = [d.column, d.baseline]
            for v, delta in zip(d.values, d.deltas, strict=True):
                row += [v, "" if delta is None else f"{delta:+.6g}"]
            body.append(row)
        return html_table(header, body, css="mlops-diff")
