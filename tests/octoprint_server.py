"""A real OctoPrint (from PyPI) with its virtual printer, on a free loopback port, for the tests.

``scripts/test.sh`` installs OctoPrint 1.11 into ``.venv-octoprint`` (its own venv: OctoPrint pins
its own Flask, Tornado and friends) and exports ``EDGE_AGENT_OCTOPRINT``, the path of its
``octoprint`` command. ``RealOctoPrint`` sets up a fresh base folder the way a user would, with
OctoPrint's own tools and API: the first-run wizard marked done and the virtual printer enabled in
``config.yaml``, an admin user from ``octoprint user add``, and an application key generated
through the appkeys plugin's API after logging in (session cookie plus CSRF token, as the web UI
does). Plugins that would reach the internet (update checks, announcements, tracking) are off.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import json
import os
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
OFFLINE_PLUGINS = [
    "announcements",
    "softwareupdate",
    "tracking",
    "errortracking",
    "discovery",
    "pluginmanager",
    "achievements",
    "health_check",
]


def octoprint_executable() -> Path | None:
    """The ``octoprint`` command scripts/test.sh installed, if any."""
    named = os.environ.get("EDGE_AGENT_OCTOPRINT")
    candidates = [Path(named)] if named else [REPO / ".venv-octoprint" / "bin" / "octoprint"]
    return next((path for path in candidates if path.is_file() and os.access(path, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealOctoPrint:
    """One OctoPrint server with a virtual printer; ``api_key`` is valid once ``start()`` returned."""

    def __init__(self, executable: Path, basedir: Path) -> None:
        self.executable = executable
        self.basedir = basedir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = ""
        self.log_path = basedir / "serve.log"
        self._password = secrets.token_hex(8)
        self._proc: subprocess.Popen[bytes] | None = None

    # -- life ------------------------------------------------------------------------------------

    def start(self, timeout_s: float = 120.0) -> RealOctoPrint:
        """Configure, start and log in; return when the virtual printer is connected."""
        self.basedir.mkdir(parents=True, exist_ok=True)
        config = {
            "server": {
                "firstRun": False,
                "onlineCheck": {"enabled": False},
                "pluginBlacklist": {"enabled": False},
            },
            "plugins": {"_disabled": OFFLINE_PLUGINS, "virtual_printer": {"enabled": True}},
            "serial": {"autoconnect": True, "port": "VIRTUAL", "baudrate": 0},
        }
        (self.basedir / "config.yaml").write_text(yaml.safe_dump(config))
        subprocess.run(
            [
                str(self.executable),
                "--basedir",
                str(self.basedir),
                "user",
                "add",
                "admin",
                "--password",
                self._password,
                "--admin",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                # the tests run as root in CI; OctoPrint refuses that unless told
                [
                    str(self.executable),
                    "--basedir",
                    str(self.basedir),
                    "serve",
                    "--iknowwhatimdoing",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        self._wait(lambda: self._answers(), "OctoPrint to answer", deadline)
        self.api_key = self._generate_key()
        self._wait(
            lambda: self.request("GET", "/api/connection")[1]["current"]["state"] == "Operational",
            "the virtual printer",
            deadline,
        )
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 30 s)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=30)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of OctoPrint's output, for a failure message."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # -- the API ---------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """One API request with the key; (status, decoded JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("X-Api-Key", self.api_key)
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw.strip() else None
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def job_state(self) -> str:
        """``state`` of ``GET /api/job`` (e.g. Printing, Pausing, Paused)."""
        return str(self.request("GET", "/api/job")[1]["state"])

    def print_gcode(self, name: str, lines: list[str], timeout_s: float = 60.0) -> None:
        """Upload ``lines`` as ``name``, select it and print it; return once it prints."""
        boundary = secrets.token_hex(12)
        payload = "\n".join(lines).encode() + b"\n"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode()
            + payload
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="select"\r\n\r\ntrue\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="print"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        req = urllib.request.Request(f"{self.url}/api/files/local", data=b"".join(parts), method="POST")
        req.add_header("X-Api-Key", self.api_key)
        req.add_header("Content-Type", f"multipart/form-data; boundary={boundary}")
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 201, resp.status
        self._wait(lambda: self.job_state() == "Printing", f"{name} to print", time.monotonic() + timeout_s)

    # -- inside ----------------------------------------------------------------------------------

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/api/version", timeout=2)
        except urllib.error.HTTPError:
            return True  # 403 without a key: it is up
        except (OSError, http.client.HTTPException):
            return False  # not listening yet, or still starting
        return True

    def _generate_key(self) -> str:
        """Log in as the admin (as the web UI does: session cookie and CSRF token) and generate an
        application key with the appkeys plugin's API."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.open(f"{self.url}/", timeout=10).read()  # sets the CSRF cookie

        def post(path: str, body: dict[str, Any]) -> Any:
            token = next(c.value for c in jar if c.name.startswith("csrf_token"))
            req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(body).encode(), method="POST")
            req.add_header("Content-Type", "application/json")
            req.add_header("X-CSRF-Token", token)
            with opener.open(req, timeout=10) as resp:
                return json.loads(resp.read())

        post("/api/login", {"user": "admin", "pass": self._password, "remember": False})
        return str(post("/api/plugin/appkeys", {"command": "generate", "app": "edge-agent-tests"})["api_key"])

    def _wait(self, condition: Any, what: str, deadline: float) -> None:
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"OctoPrint exited ({self._proc.returncode}):\n{self.log_tail()}")
            try:
                if condition():
                    return
            except (OSError, KeyError, TypeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.log_tail()}")
            time.sleep(0.25)
