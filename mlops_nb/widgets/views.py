"""The ipywidgets views over the widget models: the base every view shares, the pipeline
and the step preview (experiments: exp_view.py; parameters: params_view.py).

Each view shows three forms at once: the live widget, and an HTML and a plain-text table that
stand in wherever no widget manager runs (papermill, nbclient, a notebook viewer). Anything
slow after the first display (runs, experiments, refreshes) happens in a subprocess watched by
a thread (background.py): the kernel never waits. Errors show as one line in the view.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mlops_nb.errors import MlopsNbError
from mlops_nb.widgets import background
from mlops_nb.widgets import pipeline as pipe
from mlops_nb.widgets.preview import Preview, preview
from mlops_nb.widgets.render import html_message


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return msg if isinstance(exc, MlopsNbError) else f"{type(exc).__name__}: {msg}"


class View:
    """Text, HTML and widget forms of one view; the widget is built on first display."""

    title = ""

    def __init__(self) -> None:
        self._widget: Any = None
        self.error = ""
        self.thread: threading.Thread | None = None  # the last background job (tests join it)
        self.events: list[tuple[str, str]] = []  # (step or job, state) as progress came in

    def text(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        raise NotImplementedError

    def build(self) -> Any:
        raise NotImplementedError

    @property
    def widget(self) -> Any:
        if self._widget is None:
            self._widget = self.build()
        return self._widget

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle: dict[str, Any] = {"text/plain": self.text(), "text/html": self.html()}
        try:
            shown = self.widget._repr_mimebundle_()
        except ImportError:  # no ipywidgets: the text and HTML forms stay
            return bundle
        view = "application/vnd.jupyter.widget-view+json"
        if shown and view in shown:
            bundle[view] = shown[view]
        return bundle

    def __repr__(self) -> str:
        return self.text()


class PipelineView(View):
    """The DAG with each step's state; run the pipeline or one step, with live progress."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        self.nodes: list[pipe.Node] = []
        self.running = False
        self._refresh: Any = None
        self.reload()

    def reload(self) -> None:
        try:
            self.nodes, self.error = pipe.load(self.root), ""
        except MlopsNbError as exc:
            self.nodes, self.error = [], one_line(exc)

    def text(self) -> str:
        return f"pipeline: error: {self.error}" if self.error else pipe.text(self.nodes)

    def html(self) -> str:
        if self.error:
            return html_message(f"pipeline: error: {self.error}", error=True)
        return pipe.svg(self.nodes) + pipe.table_html(self.nodes, self.root)

    def build(self) -> Any:
        import ipywidgets as w

        # an Output, not an HTML widget: JupyterLab renders its HTML as a cell output, so a
        # link to an executed notebook opens as a tab of this JupyterLab
        view = w.Output()
        status = w.HTML("")
        run_all = w.Button(description="Run pipeline", button_style="primary")
        step = w.Dropdown(options=[n.step for n in self.nodes], description="step")
        run_one = w.Button(description="Run step")
        force = w.Checkbox(False, description="force", indent=False)
        refresh = w.Button(description="Refresh")

        def show() -> None:
            view.outputs = ({"output_type": "display_data", "metadata": {},
                             "data": {"text/html": self.html(), "text/plain": self.text()}},)

        show()

        def start(names: list[str]) -> None:
            if self.running:
                return
            self.running = True
            for b in (run_all, run_one):
                b.disabled = True
            status.value = html_message("running " + (", ".join(names) or "the pipeline"))

            def on_line(line: str) -> None:
                got = pipe.progress(line)
                if got:
                    self.events.append(got)
                    self.nodes = pipe.advance(self.nodes, *got)
                    show()

            def on_exit(done: background.Finished) -> None:
                self.running = False
                self.reload()
                show()
                for b in (run_all, run_one):
                    b.disabled = False
                status.value = html_message(done.message(), error=not done.ok)
                self.events.append(("run", "done" if done.ok else "failed"))

            args = ["run", *names] + (["-f"] if force.value else [])
            self.thread = background.start(background.mlops_command(self.root, *args), self.root,
                                           label="mlops-nb " + " ".join(args),
                                           on_line=on_line, on_exit=on_exit)

        def on_refresh(_: Any) -> None:
            self.reload()
            show()

        run_all.on_click(lambda _: start([]))
        run_one.on_click(lambda _: start([step.value] if step.value else []))
        refresh.on_click(on_refresh)
        return w.VBox([view, w.HBox([run_all, step, run_one, force, refresh]), status])


class PreviewView(View):
    """Which cells form which step of the notebook, before compiling; a Refresh button."""

    def __init__(self, root: Path, notebook: Path) -> None:
        super().__init__()
        self.root, self.notebook = root, notebook
        self.result: Preview = preview(root, notebook)

    def text(self) -> str:
        return self.result.text()

    def html(self) -> str:
        return self.result.html()

    def build(self) -> Any:
        import ipywidgets as w

        view = w.HTML(self.html())
        refresh = w.Button(description="Refresh")

        def on_refresh(_: Any) -> None:
            try:
                self.result = preview(self.root, self.notebook)
                view.value = self.html()
            except MlopsNbError as exc:
                view.value = html_message(one_line(exc), error=True)

        refresh.on_click(on_refresh)
        return w.VBox([view, refresh])
