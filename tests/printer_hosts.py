"""Stand-ins for OctoPrint and Moonraker, shared by the printer tests, for fault injection.

Real HTTP servers on 127.0.0.1 that answer the few endpoints the agent uses, with the JSON shapes
from the OctoPrint and Moonraker API documentation (and Moonraker's error body with its Python
traceback, as ``moonraker/app.py`` writes it), and record every call (method, path, headers, body)
so a test can check what the agent sent. A test can make them answer the next requests with error
statuses (``fail_next``) or hang (``hang_s``), which a real host cannot be made to do on demand;
tests/test_octoprint_real.py runs the agent against a real OctoPrint.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.helpers import serve_on_loopback


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the stand-in answered (0 while it has not)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class StandIn:
    """A local HTTP server; subclasses answer ``(method, path, call) -> (status, json or None)``."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.fail_next: list[int] = []  # statuses to answer with before behaving normally
        self.hang_s = 0.0  # wait this long before answering (a host that hangs)
        self._released = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                call = Call(self.command, self.path, dict(self.headers), self.rfile.read(length))
                stand_in.calls.append(call)
                if stand_in.hang_s:
                    stand_in._released.wait(stand_in.hang_s)
                if stand_in.fail_next:
                    status, answer = stand_in.fail_next.pop(0), {"error": "stand-in failure"}
                else:
                    status, answer = stand_in.answer(call)
                data = b"" if answer is None else json.dumps(answer).encode()
                call.status = status
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                    self._send(status, data)

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server, self.url = serve_on_loopback(Handler)

    def answer(self, call: Call) -> tuple[int, Any]:
        raise NotImplementedError

    def close(self) -> None:
        self._released.set()  # hanging requests answer now
        self.server.shutdown()
        self.server.server_close()


class FakeOctoPrint(StandIn):
    """Stands in for OctoPrint: ``GET /api/job`` reports the job, ``POST /api/job`` with ``pause``
    pauses a printing job (204, 409 when nothing prints), as OctoPrint does; every call needs
    ``api_key``. A test resumes the print by setting ``state``, as a user pressing Resume would.

    ``print_time``: the job's ``printTime`` in seconds; None for the time since the stand-in
    started (a print in progress).
    """

    def __init__(
        self, api_key: str, *, file_name: str = "benchy.gcode", print_time: int | None = 754
    ) -> None:
        self.api_key = api_key
        self.fail_pauses: list[int] = []  # statuses for the next pause requests (the state polls still work)
        self.state = "Printing"
        self.file_name = file_name
        self.print_time = print_time
        self._started = time.time()
        super().__init__()

    def answer(self, call: Call) -> tuple[int, Any]:
        if call.headers.get("X-Api-Key") != self.api_key:
            return 403, {"error": "You don't have the permission to access the requested resource."}
        if call.path == "/api/version" and call.method == "GET":
            return 200, {"api": "0.1", "server": "1.11.8", "text": "OctoPrint 1.11.8"}
        if call.path != "/api/job":
            return 404, {"error": "Not found"}
        if call.method == "GET":
            print_time = self.print_time if self.print_time is not None else int(time.time() - self._started)
            return 200, {
                "job": {
                    "file": {"name": self.file_name, "origin": "local", "path": self.file_name, "size": 1234},
                    "estimatedPrintTime": 3600,
                },
                "progress": {"completion": 21.0, "filepos": 259, "printTime": print_time},
                "state": self.state,
            }
        if self.fail_pauses:
            return self.fail_pauses.pop(0), {"error": "stand-in failure"}
        if call.json() != {"command": "pause", "action": "pause"}:
            return 400, {"error": "unknown command"}
        if self.state != "Printing":
            return 409, {"error": "Printer is not operational or not printing"}
        self.state = "Paused"  # what OctoPrint does on pause
        return 204, None

    @property
    def pauses(self) -> list[Call]:
        """The pause requests received."""
        return [c for c in self.calls if c.method == "POST"]

    @property
    def pauses_done(self) -> int:
        """Pause requests answered 204 (the print was paused)."""
        return sum(c.method == "POST" and c.status == 204 for c in self.calls)

    @property
    def polls(self) -> int:
        """How many times the job state was asked for."""
        return sum(c.method == "GET" for c in self.calls)


class FakeMoonraker(StandIn):
    """Stands in for Moonraker: ``/server/info``, the ``print_stats`` query and ``/printer/print/pause``;
    with ``api_key`` set, a request without it is answered 401 the way Moonraker does (its error
    body carries the Python traceback of the refusal)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.print_stats: dict[str, Any] = {
            "filename": "bracket.gcode",
            "state": "printing",
            "print_duration": 1200.0,
            "total_duration": 1500.0,
            "filament_used": 345.6,
            "message": "",
        }
        self.klippy_ready = True
        super().__init__()

    def answer(self, call: Call) -> tuple[int, Any]:
        if self.api_key is not None and call.headers.get("X-Api-Key") != self.api_key:
            traceback = (
                'Traceback (most recent call last):\n  File "/home/pi/moonraker/moonraker/app.py", line 920, '
                "in prepare\n    auth.check_authorized(self.request)\ntornado.web.HTTPError: HTTP 401: Unauthorized\n"
            )
            return 401, {"error": {"code": 401, "message": "Unauthorized", "traceback": traceback}}
        if call.method == "GET" and call.path == "/server/info":
            state = "ready" if self.klippy_ready else "startup"
            return 200, {
                "result": {
                    "klippy_connected": self.klippy_ready,
                    "klippy_state": state,
                    "moonraker_version": "v0.9.3-1",
                }
            }
        if not self.klippy_ready:
            return 503, {"error": {"code": 503, "message": "Klippy Host not connected"}}
        if call.method == "GET" and call.path == "/printer/objects/query?print_stats":
            return 200, {"result": {"eventtime": 5234.7, "status": {"print_stats": self.print_stats}}}
        if call.method == "POST" and call.path == "/printer/print/pause":
            self.print_stats["state"] = "paused"
            return 200, {"result": "ok"}
        return 404, {"error": {"code": 404, "message": "Not Found"}}
