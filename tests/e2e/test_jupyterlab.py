"""End to end in JupyterLab: a real server on 127.0.0.1, the example notebook in headless
Chromium (Debian's `chromium`, driven by Playwright from PyPI), the experiments widget run
from its cell and its table checked, a step's tags shown in JupyterLab's cell-tag editor, then
an edit saved through the browser and compile on save checked on the step notebook.
Screenshots go to test-artifacts/ (or $MLOPS_NB_TEST_ARTIFACTS); the docs' pictures
(docs/img/) are copies of them.
"""

from __future__ import annotations

import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from mlops_nb.widgets import experiments as exp
from tests.conftest import BIN, REPO, sh, tool_env

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("MLOPS_NB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("MLOPS_NB_TEST_ARTIFACTS", REPO / "test-artifacts"))


def _need_browser() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"SKIPPED LOUDLY: no {CHROMIUM}; install Debian's chromium package"
                    " (scripts/test.sh does it where apt is available)")
    pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install"
                        " -e '.[dev]'")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    """A JupyterLab server in `root`, stopped (with its kernels) by close()."""

    def __init__(self, root: Path, home: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = tool_env(JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(
            home / "data"), JUPYTER_RUNTIME_DIR=str(home / "runtime"), HOME=str(home))
        env.pop("PYTHONWARNINGS", None)
        self.proc = subprocess.Popen(
            [str(Path(BIN) / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.log: list[str] = []
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            for line in self.proc.stderr or []:
                self.log.append(line)
                lines.put(line)
            lines.put("")

        threading.Thread(target=pump, daemon=True).start()
        while True:  # the server says where it listens once it is ready
            line = lines.get(timeout=120)
            if not line:
                raise AssertionError("jupyter lab exited:\n" + "".join(self.log))
            if f"http://127.0.0.1:{self.port}/lab" in line:
                break

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # any kernel left in the session
        except ProcessLookupError:
            pass


def _run_cell(page, text: str, wait_for: str) -> None:  # noqa: ANN001 - playwright Page
    """Run the cell holding `text` until `wait_for` shows. A cell run in the first moments
    after the kernel reports idle can be dropped by the page (its prompt stays `[ ]`), so
    the run is sent again, up to three times, when nothing came of it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    cell = page.locator(".jp-CodeCell", has_text=text).first
    for attempt in range(3):
        cell.scroll_into_view_if_needed()
        cell.locator(".cm-content").click()
        page.keyboard.press("Shift+Enter")
        try:
            page.locator(wait_for).first.wait_for(timeout=40_000 * (attempt + 1))
            return
        except PlaywrightTimeout:
            if cell.locator(".jp-InputPrompt").inner_text().strip() not in ("[ ]:", ""):
                raise  # it ran and showed something else: a real failure


def test_experiments_widget_and_compile_on_save(example_project: Path, tmp_path: Path) -> None:
    _need_browser()
    from playwright.sync_api import sync_playwright

    root = example_project
    sh(["dvc", "exp", "run", "-q", "-n", "few-trees", "-S", "iris.N_ESTIMATORS=10"], root)
    sh(["git", "checkout", "--", "params.yaml"], root)
    names = {r.name for r in exp.load(root)}
    assert "few-trees" in names
    step_before = (root / "steps/load.ipynb").read_text()
    assert "n_rows = len(df)" not in step_before

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    lab = Lab(root, tmp_path / "home")
    try:
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                args=ARGS, viewport={"width": 1500, "height": 1000})
            page = ctx.new_page()
            try:
                page.goto(lab.url("lab/tree/notebooks/iris.ipynb"))
                page.wait_for_selector(
                    ".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
                _run_cell(page, "%mlops preview iris.ipynb", "table.mlops-preview")
                _run_cell(page, "%mlops exp show", "table.mlops-exp")
                table = page.locator("table.mlops-exp").first
                shown = table.inner_text()
                assert "few-trees" in shown
                for column in ("accuracy", "f1_macro", "iris.N_ESTIMATORS"):
                    assert column in shown
                assert "workspace" in shown
                table.scroll_into_view_if_needed()
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-experiments.png"))

                # a link to an executed notebook opens as a tab of this JupyterLab, not a
                # new browser window (issue 26.10)
                _run_cell(page, "%mlops pipeline", "table.mlops-pipeline a")
                link = page.locator("table.mlops-pipeline a", has_text="load.ipynb").first
                link.scroll_into_view_if_needed()
                pages = len(ctx.pages)
                link.click()
                tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text="load.ipynb")
                tab.first.wait_for(timeout=60_000)
                assert len(ctx.pages) == pages  # no new browser window or tab
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-pipeline-link.png"))
                tab.first.locator(".lm-TabBar-tabCloseIcon").click()
                # JupyterLab may call the opened notebook changed (it fills in what the
                # executed notebook leaves out) and ask before closing: nothing to keep
                discard = page.locator(".jp-Dialog .jp-Dialog-button", has_text="Discard")
                page.wait_for_function(
                    "() => !!document.querySelector('.jp-Dialog') || ![...document"
                    ".querySelectorAll('.lm-DockPanel-tabBar .lm-TabBar-tab')]"
                    ".some(t => t.textContent.includes('load.ipynb'))", timeout=30_000)
                if discard.count():
                    discard.first.click()
                tab.first.wait_for(state="detached", timeout=30_000)

                # the `load` step's cell and its tags in JupyterLab's own tag editor (the
                # property inspector): the tutorial's picture of tagging
                cell = page.locator(".jp-CodeCell", has_text="df['species'] = ").first
                cell.scroll_into_view_if_needed()
                cell.locator(".cm-content").click()
                page.locator(".jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id="
                             "'jp-property-inspector']").first.click()
                page.locator(".jp-Collapse-header", has_text="Common Tools").first.click()
                news = page.locator(".jp-toast-button", has_text="No")  # "Jupyter news?"
                if news.count():
                    news.first.click()
                applied = page.locator(".jp-CellTags-Applied", has_text="step:load").first
                applied.wait_for(timeout=30_000)
                assert applied.is_visible()
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-tags.png"))

                # edit the `load` step's cell and save through the browser
                cell.scroll_into_view_if_needed()
                cell.locator(".cm-content").click()
                page.keyboard.press("Control+End")
                page.keyboard.press("Enter")
                page.keyboard.type("n_rows = len(df)")
                with page.expect_response(
                        lambda r: "/api/contents/notebooks/iris.ipynb" in r.url
                        and r.request.method == "PUT", timeout=60_000) as saved:
                    page.keyboard.press("Control+s")
                assert saved.value.ok
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / "jupyterlab-failure.png"))
                raise
            finally:
                ctx.close()
    finally:
        lab.close()
    shutil.copy(root / "notebooks/iris.ipynb", ARTIFACTS / "iris-edited.ipynb")
    source = (root / "notebooks/iris.ipynb").read_text()
    assert "n_rows = len(df)" in source
    # the server's post-save hook compiled before it answered the save
    assert "n_rows = len(df)" in (root / "steps/load.ipynb").read_text()
    log = "".join(lab.log)
    assert "mlops_nb: compile on save enabled" in log
    assert "mlops_nb: compiled" in log and "steps/load.ipynb" in log
