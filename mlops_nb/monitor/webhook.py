"""Delivering one alert: a JSON POST to a webhook (Slack, Microsoft Teams), whose URL is a secret.

Rules:
- the URL comes from `$MLOPS_NB_ALERT_WEBHOOK`, or from the file `$MLOPS_NB_ALERT_WEBHOOK_FILE`
  names, which must be a regular file (not a symlink) of this user that nobody else may read
  or write; never from params.yaml or the command line. An `http://` URL is taken only for a
  loopback address (the URL would cross the network in clear otherwise);
- the URL never appears in a log, a report, an exception or the lineage store: `Webhook` does
  not show it (repr, errors), and every error text is redacted before it leaves this module;
- a delivery retries connection errors, 5xx and 429 with exponential backoff, within a bounded
  total time, each attempt with its own timeout; any other answer (4xx; 3xx: redirects are
  never followed, they would take the payload elsewhere) is final;
- an https webhook is reached through `$HTTPS_PROXY` (an http:// proxy, CONNECT) when set,
  unless `$NO_PROXY` names its host: the proxy sees the host and port, never the path.

It uses the standard library's http.client, which logs nothing (httpx logs each request's URL).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

from mlops_nb.errors import ConfigError
from mlops_nb.serve.server import is_loopback

ENV_URL = "MLOPS_NB_ALERT_WEBHOOK"
ENV_FILE = "MLOPS_NB_ALERT_WEBHOOK_FILE"
MAX_URL = 2048
REDACTED = "<webhook URL redacted>"


@dataclass(frozen=True)
class Retry:
    """How hard one notification is pushed: `total` seconds for all its attempts, `timeout`
    per attempt, waits of `first_delay`, then `factor` times longer each."""

    total: float = 5.0
    timeout: float = 2.0
    first_delay: float = 0.25
    factor: float = 2.0


DEFAULT_RETRY = Retry()


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None  # the last HTTP status, None when no answer came
    error: str  # redacted; "" when delivered
    seconds: float


class Webhook:
    """A webhook URL that never shows itself."""

    __slots__ = ("_url", "source")

    def __init__(self, url: str, source: str) -> None:
        self._url = _checked(url.strip(), source)
        self.source = source  # where it came from ($VAR or a file path), safe to show

    def __repr__(self) -> str:
        return f"Webhook({REDACTED}, from {self.source})"

    __str__ = __repr__

    def redact(self, text: str) -> str:
        """`text` with the URL and its secret parts (path, query, user) cut out."""
        parts = urlsplit(self._url)
        secrets = [self._url, self._url.split("://", 1)[-1],
                   parts.path + (f"?{parts.query}" if parts.query else ""), parts.query,
                   parts.path, parts.username or "", parts.password or ""]
        for secret in sorted(set(secrets), key=len, reverse=True):
            if len(secret) > 1:
                for form in {secret, quote(secret), quote(secret, safe="")}:
                    text = text.replace(form, REDACTED)
        return text

    def post(self, payload: Mapping[str, Any], retry: Retry = DEFAULT_RETRY,
             sleep: Callable[[float], None] = time.sleep) -> Delivery:
        """POST `payload` as JSON; retried as the module says. Never raises for the network."""
        body = json.dumps(payload, ensure_ascii=False, allow_nan=False).encode("utf-8")
        start = time.monotonic()
        deadline = start + retry.total
        delay, attempts = retry.first_delay, 0
        while True:
            attempts += 1
            timeout = max(0.05, min(retry.timeout, deadline - time.monotonic()))
            status, error, retry_after = self._attempt(body, timeout)
            took = round(time.monotonic() - start, 3)
            if status is not None and 200 <= status < 300:
                return Delivery(True, attempts, status, "", took)
            wait = delay if retry_after is None else max(delay, retry_after)
            again = status is None or status >= 500 or status == 429
            if not again or time.monotonic() + wait >= deadline:
                final = error if again else f"{error} (not retried)"
                return Delivery(False, attempts, status, self.redact(final), took)
            sleep(wait)
            delay *= retry.factor

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """A connection to the webhook; an https one through $HTTPS_PROXY when set (a CONNECT
        tunnel: the proxy sees the host and port, never the path), unless $NO_PROXY names the
        host or it is a loopback address."""
        parts = urlsplit(self._url)
        host, port = parts.hostname or "", parts.port
        if parts.scheme != "https":
            return http.client.HTTPConnection(host, port, timeout=timeout)
        context = ssl.create_default_context()
        proxy = _https_proxy(host)
        if proxy is None:
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        conn = http.client.HTTPSConnection(proxy.hostname or "", proxy.port or 80,
                                           timeout=timeout, context=context)
        headers = {}
        if proxy.username:
            login = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            headers["Proxy-Authorization"] = "Basic " + base64.b64encode(
                login.encode("utf-8")).decode("ascii")
        conn.set_tunnel(host, port or 443, headers=headers)
        return conn

    def _attempt(self, body: bytes, timeout: float) -> tuple[int | None, str, float | None]:
        parts = urlsplit(self._url)
        conn = self._connection(timeout)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", target, body=body, headers={
                "Content-Type": "application/json; charset=utf-8", "User-Agent": "mlops-nb"})
            resp = conn.getresponse()
            answer = resp.read(2000)
            status = resp.status
            retry_after = _seconds(resp.getheader("Retry-After"))
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        finally:
            conn.close()
        text = "".join(c if c.isprintable() else " " for c in
                       answer.decode("utf-8", "replace")[:200]).strip()
        return status, f"HTTP {status}" + (f": {text}" if text else ""), retry_after


def _https_proxy(host: str) -> SplitResult | None:
    """The http:// proxy $HTTPS_PROXY names for `host`, or None (unset, bypassed, loopback)."""
    from urllib.request import getproxies_environment

    proxies = getproxies_environment()
    url = proxies.get("https", "")
    if not url or is_loopback(host) or _bypassed(host.lower(), proxies.get("no", "")):
        return None
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return parts if parts.scheme == "http" and parts.hostname else None


def _bypassed(host: str, no_proxy: str) -> bool:
    """$NO_PROXY's rule: `*`, the host itself, or a domain it is in (`.example.com`)."""
    for entry in no_proxy.split(","):
        name = entry.strip().lower().lstrip(".")
        if name.count(":") == 1:  # host:port
            name = name.split(":")[0]
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def _seconds(value: str | None) -> float | None:
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def _checked(url: str, source: str) -> str:
    """`url` when it is an https URL (http only to a loopback address); the error never
    quotes it."""
    secret = "its value is not shown: it is a secret"
    if not url or len(url) > MAX_URL or any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(source, f"the webhook URL must be one line of at most {MAX_URL}"
                                  f" printable characters without spaces ({secret})")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(source, f"the webhook URL is not a valid URL ({secret})") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(source, f"the webhook URL must start with https:// and name a host"
                                  f" ({secret})")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(source, "an http:// webhook URL is taken only for a loopback address"
                                  " (it would cross the network in clear): use https://"
                                  f" ({secret})")
    return url


def read_file(path: Path) -> Webhook:
    """The webhook in `path`: refused unless a regular file of this user, not a symlink, that
    nobody else may read or write."""
    where = f"${ENV_FILE} ({path})"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(where, "is a symlink; the webhook file must be a plain file of"
                                     " yours: put the URL in the file itself") from None
        raise ConfigError(where, f"cannot open it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(where, "is not a plain file")
        if st.st_uid != os.getuid():
            raise ConfigError(where, f"belongs to another user (uid {st.st_uid}); the webhook"
                                     " URL must be in a file of yours that only you can read")
        if st.st_mode & 0o077:
            raise ConfigError(where, f"mode {stat.S_IMODE(st.st_mode):04o} lets other users"
                                     f" read or write it; run `chmod 600 {path}`")
        data = f.read(MAX_URL + 2)
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(where, "is not UTF-8 text") from None
    return Webhook(text, where)


def from_env(environ: Mapping[str, str] | None = None) -> Webhook | None:
    """The webhook the environment names, or None when it names none."""
    env = os.environ if environ is None else environ
    url, file = env.get(ENV_URL, ""), env.get(ENV_FILE, "")
    if url and file:
        raise ConfigError(f"${ENV_URL}", f"both ${ENV_URL} and ${ENV_FILE} are set: keep one")
    if file:
        return read_file(Path(file))
    return Webhook(url, f"${ENV_URL}") if url else None
