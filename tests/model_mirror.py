"""A model mirror on loopback for the ``models fetch`` tests: a real HTTP server in a thread.

It serves ``/<catalog name>/<file name>`` (the layout ``--mirror`` asks for) from bytes the test
gives, and can misbehave per path the way real servers and networks do: answer an HTTP error,
close the connection half-way through the body, or stall after the headers.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal

from tests.helpers import serve_on_loopback

Mode = Literal["ok", "cut", "stall"]
STALL_LIMIT_S = 60.0  # a stalled answer gives up after this, or when the mirror closes


@dataclass
class Route:
    """What the mirror answers for one path: ``body`` whole (ok), its first half and then a closed
    connection (cut), or the headers and then nothing (stall); ``status`` other than 200 answers
    that status with no body."""

    body: bytes = b""
    mode: Mode = "ok"
    status: int = 200


class ModelMirror:
    """An HTTP server on 127.0.0.1; ``routes`` maps paths to answers, ``requests`` counts GETs."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: dict[str, int] = {}
        self._closing = threading.Event()
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                mirror.requests[self.path] = mirror.requests.get(self.path, 0) + 1
                route = mirror.routes.get(self.path, Route(status=404))
                self.close_connection = True
                if route.status != 200:
                    self.send_error(route.status)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if route.mode == "ok":
                    self.wfile.write(route.body)
                elif route.mode == "cut":
                    self.wfile.write(route.body[: len(route.body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.flush()
                    mirror._closing.wait(STALL_LIMIT_S)

            def log_message(self, *args: Any) -> None:
                pass

        self.server, self.url = serve_on_loopback(Handler)

    def close(self) -> None:
        """Release stalled answers and stop the server."""
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens (a port bound, then closed): connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
