"""Alerts: one notification per incident and one when resolved, delivered to a real webhook
receiver (http.server on 127.0.0.1) with retries, the URL a secret that never leaks, the
webhook file refused unless private, hostile names and reasons carried safely."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
from pathlib import Path

import pytest

from mlops_nb.cli import main
from mlops_nb.errors import ArtifactError, ConfigError
from mlops_nb.guards.lineage import LineageStore, default_path
from mlops_nb.monitor import alerts
from mlops_nb.monitor.alerts import Breach
from mlops_nb.monitor.webhook import ENV_FILE, ENV_URL, Retry, Webhook, from_env, read_file
from tests.receiver import SECRET_PATH, iris_project, iris_rows, receiving, write_serving_log

FAST = Retry(total=1.0, timeout=1.0, first_delay=0.05)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text("{}\n")
    return tmp_path


def drift(model: str = "iris", summary: str = "3 columns drifted") -> Breach:
    return Breach(model, "drift", summary, 1, {"drifted_columns": ["a", "b", "c"]})


def alert_events(root: Path) -> list[dict]:
    return list(reversed(LineageStore(default_path(root)).events("alert")))


def test_one_alert_per_incident_and_one_when_resolved(root):
    with receiving() as rec:
        hook = Webhook(rec.url, "test")
        for _ in range(3):  # the breach holds over three runs: one notification
            out = alerts.update(root, "iris", ["drift", "skew"], [drift()], webhook=hook,
                                retry=FAST)
        assert (len(out.ongoing), out.sent, out.unsent) == (1, 0, 0)
        assert [b["mlops_nb"]["event"] for b in rec.bodies()] == ["opened"]
        assert alerts.open_incidents(root)[0]["runs"] == 3
        # a run that judged nothing (too few records) leaves the incident open
        alerts.update(root, "iris", [], [], webhook=hook, retry=FAST)
        assert len(rec.got) == 1 and alerts.open_incidents(root)
        for _ in range(2):  # the breach no longer holds: one "resolved"
            out = alerts.update(root, "iris", ["drift", "skew"], [], webhook=hook, retry=FAST)
        assert [b["mlops_nb"]["event"] for b in rec.bodies()] == ["opened", "resolved"]
        opened, resolved = rec.bodies()
        assert opened["mlops_nb"]["incident"] == resolved["mlops_nb"]["incident"]
        assert opened["text"].startswith("[mlops-nb] ALERT iris drift: 3 columns drifted")
        assert "RESOLVED iris drift" in resolved["text"] and "3 run(s)" in resolved["text"]
        assert opened["mlops_nb"]["figures"] == {"drifted_columns": ["a", "b", "c"]}
        assert rec.got[0].headers["Content-Type"].startswith("application/json")
        # a new breach later is a new incident
        alerts.update(root, "iris", ["drift"], [drift()], webhook=hook, retry=FAST)
        assert len(rec.bodies("opened")) == 2
    assert [e["payload"]["event"] for e in alert_events(root)] == ["opened", "resolved",
                                                                    "opened"]
    assert alert_events(root)[0]["subject"] == "iris/drift"


def test_retry_with_backoff_when_the_receiver_answers_500_then_200(root):
    with receiving() as rec:
        rec.answers = [500, 503, 200]
        out = alerts.update(root, "iris", ["drift"], [drift()], webhook=Webhook(rec.url, "t"),
                            retry=Retry(total=5, timeout=1, first_delay=0.1))
    assert (out.sent, out.unsent) == (1, 0)
    assert len(rec.got) == 3 and rec.bodies()[0] == rec.bodies()[2]
    first_wait, second_wait = (rec.got[1].at - rec.got[0].at, rec.got[2].at - rec.got[1].at)
    assert first_wait >= 0.1 and second_wait >= 0.2  # exponential: 0.1 s, then 0.2 s


@pytest.mark.parametrize("status", [404, 302])  # a redirect is never followed
def test_a_4xx_or_a_redirect_is_not_retried(root, status):
    with receiving() as rec:
        rec.answers = [status]
        out = alerts.update(root, "iris", ["drift"], [drift()], webhook=Webhook(rec.url, "t"),
                            retry=FAST)
    assert len(rec.got) == 1 and out.unsent == 1 and f"HTTP {status}" in out.error
    assert "not retried" in out.error


def test_a_webhook_that_stays_down_keeps_the_notification_for_the_next_run(root, caplog):
    with receiving() as rec:
        hook = Webhook(rec.url, "t")
        rec.answers = [503] * 100
        out = alerts.update(root, "iris", ["drift"], [drift()], webhook=hook,
                            retry=Retry(total=0.4, timeout=0.5, first_delay=0.05))
        assert (out.sent, out.unsent) == (0, 1) and "HTTP 503" in out.error
        assert alerts.open_incidents(root) and alerts.pending(root)[0]["event"] == "opened"
        assert len(alert_events(root)) == 1  # the incident is recorded all the same
        rec.answers = []
        # the next run: the breach still holds (no new incident), the unsent one goes out
        out = alerts.update(root, "iris", ["drift"], [drift()], webhook=hook, retry=FAST)
        assert (out.sent, out.unsent, len(out.ongoing)) == (1, 0, 1)
        delivered = [r.body for r in rec.got][-1]
        assert delivered["mlops_nb"]["event"] == "opened" and not alerts.pending(root)
        assert len(alert_events(root)) == 1


def test_connection_refused_is_retried_and_reported_without_the_url(root):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}{SECRET_PATH}"
    result = Webhook(url, "t").post({"text": "x"}, Retry(total=0.3, timeout=0.2,
                                                         first_delay=0.05))
    assert not result.ok and result.attempts >= 2 and result.status is None
    assert "ConnectionRefusedError" in result.error and SECRET_PATH not in result.error


def written(root: Path) -> str:
    """Every file under .mlops_nb and every lineage event, as text."""
    text = ""
    for path in (root / ".mlops_nb").rglob("*"):
        if path.is_file():
            text += path.read_bytes().decode("utf-8", "replace")
    con = sqlite3.connect(default_path(root))
    text += json.dumps(con.execute("SELECT * FROM events").fetchall())
    con.close()
    return text


def test_the_url_never_appears_in_output_logs_state_or_lineage(tmp_path, monkeypatch, capsys,
                                                                caplog):
    root = iris_project(tmp_path / "p")
    caplog.set_level("DEBUG")
    seen = []  # what was on disk after each run: undelivered notifications are kept there
    with receiving() as rec:
        monkeypatch.setenv(ENV_URL, rec.url)
        secret = SECRET_PATH.rsplit("/", 1)[1]
        write_serving_log(root, iris_rows(shift=4.0))
        rec.answers = [500, 500, 404]  # failures say the most: the error path must not leak
        assert main(["-C", str(root), "-v", "monitor", "iris", "--json"]) == 14
        seen.append(written(root))
        first = capsys.readouterr()
        assert '"unsent": 2' in first.out
        rec.answers = [500, 500, 404]
        assert main(["-C", str(root), "-v", "monitor", "iris"]) == 14
        seen.append(written(root))
        write_serving_log(root, iris_rows())
        assert main(["-C", str(root), "-v", "monitor", "iris", "--rollback"]) == 0
        seen.append(written(root))
        out, err = capsys.readouterr()
        out, err = first.out + out, first.err + err
    assert [b["mlops_nb"]["event"] for b in rec.bodies()].count("opened") >= 2
    assert "still open since" in out
    assert "alert webhook: 2 notification(s) not delivered (HTTP 404" in err
    assert "incident resolved" in out and "no online quality yet" in out
    everything = out + err + caplog.text + "".join(seen)
    for part in (rec.url, SECRET_PATH, secret, "T0SECRET", "B0SECRET"):
        assert part not in everything, part
    assert "webhook" in repr(Webhook(rec.url, "t")).lower() and secret not in repr(
        Webhook(rec.url, "t"))


def test_monitor_sends_one_alert_per_incident_across_runs(tmp_path, monkeypatch, capsys):
    root = iris_project(tmp_path / "p")
    with receiving() as rec:
        monkeypatch.setenv(ENV_URL, rec.url)
        write_serving_log(root, iris_rows(shift=4.0))  # drift and out-of-range values
        for _ in range(3):
            assert main(["-C", str(root), "monitor", "iris"]) == 14
        assert sorted(b["mlops_nb"]["check"] for b in rec.bodies()) == ["drift", "skew"]
        write_serving_log(root, iris_rows())
        for _ in range(2):
            assert main(["-C", str(root), "monitor", "iris"]) == 0
        write_serving_log(root, iris_rows(n=10))  # too few records: no verdict, no alert
        assert main(["-C", str(root), "monitor", "iris"]) == 0
    events = [(b["mlops_nb"]["check"], b["mlops_nb"]["event"]) for b in rec.bodies()]
    assert sorted(events) == [("drift", "opened"), ("drift", "resolved"), ("skew", "opened"),
                              ("skew", "resolved")]
    assert "still open since" in capsys.readouterr().out


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o620, 0o602])
def test_a_webhook_file_others_may_read_or_write_is_refused(tmp_path, mode):
    path = private(tmp_path / "hook", "https://hooks.example.com" + SECRET_PATH, mode)
    with pytest.raises(ConfigError, match=f"mode {mode:04o} lets other users read or write"
                                          " it; run `chmod 600") as err:
        read_file(path)
    assert SECRET_PATH not in str(err.value)


def test_a_webhook_file_that_is_a_symlink_fifo_or_anothers_is_refused(tmp_path):
    good = private(tmp_path / "hook", "https://hooks.example.com" + SECRET_PATH)
    assert read_file(good).source.endswith(f"({good})")
    (tmp_path / "link").symlink_to(good)
    with pytest.raises(ConfigError, match="is a symlink"):
        read_file(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(ConfigError, match="not a plain file"):
        read_file(tmp_path / "fifo")
    if os.getuid() == 0:  # as root, make the file another user's
        other = private(tmp_path / "other", "https://hooks.example.com/x")
        os.chown(other, 65534, 65534)
    else:
        other = Path("/etc/hostname") if Path("/etc/hostname").exists() else Path("/etc/passwd")
    with pytest.raises(ConfigError, match="belongs to another user"):
        read_file(other)


def test_a_refused_webhook_file_stops_monitor_with_exit_3_naming_it(tmp_path, monkeypatch,
                                                                    capsys):
    root = iris_project(tmp_path / "p")
    hook = private(tmp_path / "hook", "https://hooks.example.com" + SECRET_PATH, 0o644)
    monkeypatch.setenv(ENV_FILE, str(hook))
    assert main(["-C", str(root), "monitor", "iris"]) == 3
    err = capsys.readouterr().err
    assert str(hook) in err and "chmod 600" in err and SECRET_PATH not in err
    assert not (root / ".mlops_nb/monitor").exists()


@pytest.mark.parametrize("url, says", [
    ("ftp://hooks.example.com" + SECRET_PATH, "must start with https://"),
    ("http://hooks.example.com" + SECRET_PATH, "only for a loopback address"),
    ("https://hooks.example.com" + SECRET_PATH + "\nX-Injected: 1", "one line"),
    ("https://hooks.example.com:99999" + SECRET_PATH, "not a valid URL"),
    ("https://" + "a" * 3000, "at most 2048"),
])
def test_a_bad_webhook_url_is_refused_without_showing_it(url, says):
    with pytest.raises(ConfigError, match=says) as err:
        from_env({ENV_URL: url})
    assert SECRET_PATH not in str(err.value) and "aaaa" not in str(err.value)


def test_both_variables_set_is_an_error_and_none_means_no_webhook(tmp_path):
    assert from_env({}) is None
    with pytest.raises(ConfigError, match="keep one"):
        from_env({ENV_URL: "https://h.example.com/x", ENV_FILE: str(tmp_path / "f")})


def test_hostile_model_names_and_summaries_are_carried_safely(root):
    name = "iris\"'\n<!channel> & ünïcødé 模型"
    summary = "line one\nline two\t\"quoted\" <https://evil.example|click> " + "x" * 5000
    with receiving() as rec:
        figures = {"nan": float("nan"), "deep": [[[[[[[[1]]]]]]]]}
        alerts.update(root, name, ["drift"], [Breach(name, "drift", summary, 2, figures)],
                      webhook=Webhook(rec.url, "t"), retry=FAST)
    (body,) = rec.bodies()
    text = body["text"]
    assert "\n" not in text and "<" not in text and "&lt;!channel&gt; &amp;" in text
    assert "ünïcødé 模型" in text and len(text) <= alerts.MAX_TEXT
    assert body["mlops_nb"]["model"] == name and body["mlops_nb"]["summary"] == summary[:2000]
    assert body["mlops_nb"]["figures"]["nan"] is None
    assert alerts.open_incidents(root)[0]["model"] == name


def test_a_planted_state_symlink_is_refused_never_followed(root, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"format": 1, "open": [], "outbox": []}')
    (root / ".mlops_nb/alerts").mkdir(parents=True)
    (root / ".mlops_nb/alerts/state.json").symlink_to(target)
    with pytest.raises(ArtifactError, match="is a symlink"):
        alerts.update(root, "iris", ["drift"], [drift()], webhook=None)
    assert target.read_text() == '{"format": 1, "open": [], "outbox": []}'


def test_the_state_file_is_private_and_a_damaged_one_is_named(root):
    alerts.update(root, "iris", ["drift"], [drift()], webhook=None)
    state = root / ".mlops_nb/alerts/state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert not alerts.pending(root)  # no webhook: nothing queued, the incident recorded
    state.write_text("{not json")
    with pytest.raises(ConfigError, match="state.json: unreadable .*remove it"):
        alerts.update(root, "iris", ["drift"], [], webhook=None)


def test_monitor_breaches_of_a_report():
    assert alerts.monitor_breaches({"status": "insufficient", "model": "iris:1"}) == ([], [])
    checked, breaches = alerts.monitor_breaches(
        {"status": "drift", "model": "iris:2", "drift_detected": True, "rows": 60,
         "drifted_columns": ["a"], "skew": {"anomalies": [{"message": "a: 9 above 7"}]}})
    assert checked == ["drift", "skew"]
    assert [(b.model, b.check, b.version) for b in breaches] == [("iris", "drift", 2),
                                                                 ("iris", "skew", 2)]
    assert "a: 9 above 7" in breaches[1].summary
    with pytest.raises(ValueError, match="not one of"):
        alerts.update(Path("/nonexistent"), "iris", ["skew"], [drift()], webhook=None)


def test_error_texts_are_redacted_in_every_form_of_the_url():
    from urllib.parse import quote

    url = "https://user:pw123@hooks.example.com" + SECRET_PATH + "?token=abc123secret"
    hook = Webhook(url, "$" + ENV_URL)
    text = hook.redact(f"POST {url} failed; path {SECRET_PATH}; query token=abc123secret;"
                       f" quoted {quote(url, safe='')}; bare {url.split('://')[1]}")
    for part in (SECRET_PATH, "abc123secret", "T0SECRET", "pw123", quote(SECRET_PATH, safe="")):
        assert part not in text, part
    assert "hooks.example.com" in repr(hook) or "redacted" in repr(hook)
    assert SECRET_PATH not in repr(hook) and SECRET_PATH not in str(hook)


def test_runs_at_once_open_one_incident_and_send_one_notification(root):
    import threading

    with receiving() as rec:
        hook = Webhook(rec.url, "t")
        start = threading.Barrier(4)

        def run() -> None:
            start.wait()
            alerts.update(root, "iris", ["drift"], [drift()], webhook=hook, retry=FAST)

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(rec.got) == 1 and alerts.open_incidents(root)[0]["runs"] == 4
    assert len(alert_events(root)) == 1


def test_an_https_webhook_that_fails_its_tls_handshake_is_retried_and_redacted():
    with receiving() as rec:  # a plain-HTTP server: the TLS handshake fails
        url = rec.url.replace("http://", "https://")
        result = Webhook(url, "t").post({"text": "x"}, Retry(total=0.3, timeout=0.2,
                                                             first_delay=0.05))
    assert not result.ok and result.status is None and result.attempts >= 2
    assert "SSL" in result.error and SECRET_PATH not in result.error
    assert rec.got == []  # nothing was sent in clear


@pytest.fixture
def proxy():
    """A real HTTP proxy on 127.0.0.1 that records each request head and refuses the tunnel."""
    import socketserver
    import threading

    heads: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline(65536)
                if not line:
                    break
                head += line
            heads.append(head.decode("latin-1"))
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], heads
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_https_webhook_goes_through_https_proxy_which_sees_host_and_port_only(
        proxy, monkeypatch):
    import base64

    port, heads = proxy
    for var in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://me:pa%40ss@127.0.0.1:{port}")
    hook = Webhook("https://hooks.example.com" + SECRET_PATH, "t")
    result = hook.post({"text": "x"}, Retry(total=0.3, timeout=0.5, first_delay=0.05))
    assert not result.ok and "Tunnel connection failed: 403" in result.error
    assert heads and heads[0].startswith("CONNECT hooks.example.com:443 HTTP/1.")
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'me:pa@ss').decode()}" in heads[0]
    assert not any(SECRET_PATH in h or "T0SECRET" in h for h in heads)
    assert "pa@ss" not in result.error and "pa%40ss" not in result.error
    # $NO_PROXY naming the host's domain, or a loopback webhook: never through the proxy
    monkeypatch.setenv("NO_PROXY", "localhost,.example.com")
    from mlops_nb.monitor import webhook as webhook_mod

    assert webhook_mod._https_proxy("hooks.example.com") is None
    assert webhook_mod._https_proxy("127.0.0.1") is None
    monkeypatch.setenv("NO_PROXY", "other.org")
    assert webhook_mod._https_proxy("hooks.example.com") is not None
