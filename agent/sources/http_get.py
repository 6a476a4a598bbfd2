"""One HTTP GET to a webcam (MJPEG stream or snapshot), with the failures put in words.

Built on ``http.client`` so the stream's body can be read as it arrives and the socket can be
shut down from another thread to stop a blocked read.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from urllib.parse import urlsplit

from agent import __version__
from agent.config.source import SourceSettings
from agent.sources.base import SourceUnavailable, connect_at_start
from agent.sources.credentials import Credentials
from agent.sources.decode import sniff_format

HTTP_HINT = (
    "Check the URL opens in a browser from this machine, that the camera server runs, and the "
    "credentials; raise source.startup_attempts or connect_timeout_s to wait longer at start."
)


class HttpEndpoint:
    """Where to GET and with which headers; ``redacted_url`` is safe to log."""

    def __init__(self, settings: SourceSettings) -> None:
        parts = urlsplit(settings.url)
        self.settings = settings
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.redacted_url = settings.redacted_url
        credentials = Credentials.from_settings(settings)
        self.headers = {
            "User-Agent": f"edge-agent/{__version__}",
            "Accept": "multipart/x-mixed-replace, image/jpeg, image/png, */*",
            **settings.headers,
            **credentials.http_headers(),
        }
        if settings.username is None and parts.username:
            # A user name (no password) given in the URL itself.
            self.headers.update(Credentials(username=parts.username).http_headers())
        self._ssl_context: ssl.SSLContext | None = None
        if self.https:
            self._ssl_context = ssl.create_default_context()
            if not settings.tls_verify:
                self._ssl_context.check_hostname = False
                self._ssl_context.verify_mode = ssl.CERT_NONE

    def _connection(self) -> http.client.HTTPConnection:
        timeout = self.settings.connect_timeout_s
        if self.https:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def get(self) -> OpenResponse:
        """Connect, send the GET and read the status line and headers.

        Returns the open response (body not read yet; reads time out after ``read_timeout_s``).
        Raises ``SourceUnavailable`` saying what went wrong.
        """
        conn = self._connection()
        try:
            conn.connect()
            # Kept here: http.client drops conn.sock when the server will close the connection,
            # but the body is still read from this socket.
            sock = conn.sock
            conn.request("GET", self.target, headers=self.headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise self._describe(exc) from None
        except BaseException:
            conn.close()
            raise
        opened = OpenResponse(conn, response, sock)
        if response.status != 200:
            opened.close()
            raise self._describe_status(response)
        if sock is not None:
            sock.settimeout(self.settings.read_timeout_s)
        return opened

    def _describe(self, exc: BaseException) -> SourceUnavailable:
        where = f"{self.host}:{self.port or (443 if self.https else 80)}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return SourceUnavailable(
                f"TLS certificate of {where} not trusted ({exc.verify_message}); install the CA or set "
                "source.tls_verify: false for a self-signed camera",
                permanent=True,
            )
        if isinstance(exc, ConnectionRefusedError):
            return SourceUnavailable(f"connection refused by {where} (nothing listens there)")
        if isinstance(exc, socket.gaierror):
            return SourceUnavailable(f"host name {self.host!r} not found")
        if isinstance(exc, TimeoutError):
            return SourceUnavailable(f"no answer from {where} within {self.settings.connect_timeout_s:g} s")
        if isinstance(exc, http.client.HTTPException):
            return SourceUnavailable(f"{where} did not answer with valid HTTP ({type(exc).__name__})")
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return SourceUnavailable(f"cannot reach {where}: {reason}")

    def _describe_status(self, response: http.client.HTTPResponse) -> SourceUnavailable:
        status = f"HTTP {response.status} {response.reason}".strip()
        if response.status in (401, 403):
            return SourceUnavailable(
                f"{status}: the server wants credentials; set source.api_key_env or api_key_file "
                "(OctoPrint: an application key) or source.username with password_env/password_file",
                permanent=True,
            )
        if response.status == 404:
            return SourceUnavailable(
                f"{status}: no such path; OctoPrint and crowsnest serve /webcam/?action=stream and "
                "/webcam/?action=snapshot",
                permanent=True,
            )
        if response.status in (301, 302, 303, 307, 308):
            location = response.getheader("Location", "?")
            return SourceUnavailable(f"{status}: redirects to {location}; use that URL", permanent=True)
        return SourceUnavailable(status)


class OpenResponse:
    """An HTTP response being read, with the socket under it so another thread can cut it."""

    def __init__(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, sock: socket.socket | None
    ) -> None:
        self.conn = conn
        self.response = response
        self.sock = sock

    def shutdown(self) -> None:
        """Shut the socket down so a read blocked on it in another thread returns at once."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close the response, the connection and the socket."""
        self.response.close()
        self.conn.close()
        if self.sock is not None:
            self.sock.close()


class ConnectionHolder:
    """The response currently read by a reading thread, for ``close()`` on another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: OpenResponse | None = None

    def set(self, current: OpenResponse | None) -> None:
        """Remember ``current`` (None when the reader closed it)."""
        with self._lock:
            self._current = current

    def interrupt(self) -> None:
        """Unblock a read on the current response."""
        with self._lock:
            if self._current is not None:
                self._current.shutdown()


def probe_http_kind(settings: SourceSettings) -> str:
    """``"mjpeg"`` or ``"snapshot"``: what the URL serves, from one GET's Content-Type (or the
    first bytes when the type says neither). Retries like a source start; ``UserError`` when the
    URL cannot be reached or serves something else."""
    endpoint = HttpEndpoint(settings)

    def attempt() -> str:
        opened = endpoint.get()
        response = opened.response
        try:
            content_type = response.headers.get_content_type()
            if content_type.startswith("multipart/"):
                return "mjpeg"
            if content_type.startswith("image/"):
                return "snapshot"
            try:
                head = response.read(16)
            except (OSError, http.client.HTTPException):
                head = b""
            if sniff_format(head) is not None:
                return "snapshot"
            raise SourceUnavailable(
                f"answered with Content-Type {content_type}, neither an MJPEG stream nor an image; "
                "OctoPrint and crowsnest serve /webcam/?action=stream and /webcam/?action=snapshot",
                permanent=True,
            )
        finally:
            opened.close()

    return connect_at_start(attempt, settings, f"HTTP source {settings.redacted_url}", HTTP_HINT)
