"""What a Jupyter kernel would send for one cell, collected in the order it happened.

Rule: a cell run in-process records the outputs papermill records from a kernel, in the same
shape: stdout/stderr streams (consecutive writes merged, as nbclient merges them), every
display's full MIME bundle, the last expression's value once as an `execute_result` with the
cell's execution count (no `Out[N]:` prompt text), `clear_output`, and the error with
IPython's traceback of the user's code (no frames of ours).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher


class Outputs:
    """The outputs of the cell that is running, as nbformat dicts.

    Streams are buffered as ipykernel buffers them: what a cell printed is flushed, stdout
    first, before each display, result and error and when the cell ends.
    """

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.count: int | None = None
        self._clear_on_next = False
        self._pending: dict[str, str] = {"stdout": "", "stderr": ""}

    def start(self, count: int) -> None:
        self.items, self.count = [], count

    def _add(self, out: dict[str, Any]) -> None:
        if self._clear_on_next:
            self.items.clear()
            self._clear_on_next = False
        self.items.append(out)

    def flush(self) -> None:
        for name in ("stdout", "stderr"):
            text, self._pending[name] = self._pending[name], ""
            if not text:
                continue
            last = self.items[-1] if self.items and not self._clear_on_next else None
            if last and last["output_type"] == "stream" and last["name"] == name:
                last["text"] += text
            else:
                self._add({"output_type": "stream", "name": name, "text": text})

    def stream(self, name: str, text: str) -> None:
        self._pending[name] += text

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        self.flush()
        self._add({"output_type": "display_data", "data": dict(data),
                   "metadata": dict(metadata or {})})

    def result(self, data: dict[str, Any], metadata: dict[str, Any] | None) -> None:
        self.flush()
        self._add({"output_type": "execute_result", "execution_count": self.count,
                   "data": dict(data), "metadata": dict(metadata or {})})

    def error(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        """ipykernel's error message: IPython's traceback of the cell's own frames."""
        self.flush()
        self._add({"output_type": "error", "ename": etype.__name__, "evalue": str(evalue),
                   "traceback": list(stb)})

    def clear(self, wait: bool) -> None:
        self.flush()
        if wait:
            self._clear_on_next = True
        else:
            self.items.clear()


class _Stream(io.TextIOBase):
    def __init__(self, sink: Outputs, name: str) -> None:
        self._sink, self.name = sink, name

    def write(self, text: str) -> int:  # type: ignore[override]
        self._sink.stream(self.name, text)
        return len(text)

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _Publisher(DisplayPublisher):
    """display(): every MIME type the formatters produced, as the kernel sends them."""

    sink: Outputs

    def publish(self, data: dict[str, Any], metadata: dict[str, Any] | None = None,
                source: Any = None, *, transient: Any = None, update: bool = False,
                **kwargs: Any) -> None:
        self.sink.display(data, metadata)

    def clear_output(self, wait: bool = False) -> None:
        self.sink.clear(wait)


class _Hook(DisplayHook):
    """The last expression's value: an execute_result, without the terminal's prompt."""

    sink: Outputs

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict[str, Any], md_dict: Any = None) -> None:
        self.sink.result(format_dict, md_dict)

    def finish_displayhook(self) -> None:
        pass


def install(shell: Any) -> Outputs:
    """Route the shell's displays and results into a fresh Outputs; returns it."""
    sink = Outputs()
    pub = _Publisher(shell=shell, parent=shell)
    pub.sink = sink
    shell.display_pub = pub
    hook = _Hook(shell=shell, cache_size=shell.cache_size, parent=shell)
    hook.sink = sink
    shell.displayhook = hook
    shell.display_trap.hook = hook
    shell._showtraceback = sink.error  # what ipykernel overrides to send the error
    return sink


@contextmanager
def capturing(sink: Outputs) -> Iterator[None]:
    """sys.stdout and sys.stderr write into `sink` while the cell runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Stream(sink, "stdout"), _Stream(sink, "stderr")
    try:
        yield
    finally:
        sink.flush()
        sys.stdout, sys.stderr = saved
