"""``tidings web`` as a real process, and an HTTP client for it (the standard library's)."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.cli.helpers import Running, wait_for
from tests.integration.test_exporter import free_port

__all__ = ["Web", "http"]


def http(url: str, method: str = "GET", data: dict[str, Any] | None = None,
         headers: dict[str, str] | None = None, auth: tuple[str, str] | None = None,
         json_body: Any = None, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    """``(status, headers, body)``; the body decoded from JSON when it is JSON."""
    body = None
    hdrs = dict(headers or {})
    if data is not None:
        body = urllib.parse.urlencode(data).encode()
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        hdrs["Content-Type"] = "application/json"
    if auth is not None:
        hdrs["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, data=body, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, rheaders, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, rheaders, raw = exc.code, dict(exc.headers), exc.read()
    kind = {k.lower(): v for k, v in rheaders.items()}.get("content-type", "")
    if kind.startswith("application/json"):
        return status, rheaders, json.loads(raw)
    return status, rheaders, raw.decode("utf-8", "replace")


class Web:
    """``tidings web`` on a free loopback port, with ``env`` (the cluster's exchanges)."""

    def __init__(self, env: dict[str, str], tmp_path: Path, *args: str,
                 name: str = "web") -> None:
        self.port = free_port()
        self.running = Running(["web", "--port", str(self.port), *args], env, tmp_path,
                               name=name)
        ok = wait_for(lambda: "receiving events" in self.running.stderr
                      or self.running.proc.poll() is not None, 60)
        assert ok and self.running.proc.poll() is None, self.running.stderr
        match = re.search(r"-> web: (\S+?)/?[, ]", self.running.stderr)
        self.url = match.group(1).rstrip("/") if match else f"http://127.0.0.1:{self.port}"

    def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return http(self.url + path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        return http(self.url + path, method="POST", **kwargs)

    def stop(self) -> int:
        return self.running.stop()
