"""The HTTP client every printer host shares: JSON requests with the API key, failures as one
readable line, and an outage-aware log.

Requests use the standard library (``urllib``): a printer host speaks small JSON documents, and a
dependency would replace nothing we write here. A failed request raises ``HttpError`` whose text is
one line a user can read: the HTTP status with the host's own message (OctoPrint's ``error`` string,
Moonraker's ``error.message``, never the Python traceback Moonraker embeds), or what went wrong on
the way ("connection refused", "no answer within 5 s", "cannot resolve octopi.local").
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

MESSAGE_CHARS = 200  # the host's message is cut to this many characters in a log line


class HttpError(Exception):
    """A request that failed. ``status`` is the HTTP status when the host answered (None when it did
    not); ``reason`` is why it did not answer: ``refused``, ``timeout``, ``dns``, ``tls``,
    ``network``, or ``answer`` (it answered, with an error status or something that is not JSON)."""

    def __init__(self, message: str, *, status: int | None = None, reason: str = "answer") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed: no answer, or a 5xx (the host is busy or its
        printer firmware is not connected yet)."""
        return self.status is None or self.status >= 500


def answer_message(raw: bytes) -> str:
    """The host's own one-line explanation from an error body: OctoPrint's ``{"error": "..."}``,
    Moonraker's ``{"error": {"message": "..."}}`` (its ``traceback`` left out), or the first line
    of a plain-text body; "" for HTML pages and empty bodies."""
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        first = text.splitlines()[0].strip()
        return "" if first.startswith("<") else first[:MESSAGE_CHARS]
    if isinstance(data, dict):
        error = data.get("error", data.get("message"))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            return " ".join(error.split())[:MESSAGE_CHARS]
    return ""


def _network_error(exc: BaseException, url: str, timeout_s: float) -> HttpError:
    """An ``HttpError`` naming why ``url`` gave no answer."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(reason, ConnectionRefusedError):
        return HttpError("connection refused", reason="refused")
    if isinstance(reason, TimeoutError | socket.timeout):
        return HttpError(f"no answer within {timeout_s:g} s", reason="timeout")
    if isinstance(reason, socket.gaierror):
        return HttpError(f"cannot resolve the host name {host!r}", reason="dns")
    if isinstance(reason, ssl.SSLError):
        return HttpError(f"TLS failed ({reason.reason or reason})", reason="tls")
    if isinstance(reason, OSError) and reason.strerror:
        return HttpError(reason.strerror.lower(), reason="network")
    if isinstance(reason, http.client.HTTPException):
        return HttpError(f"broken answer ({type(reason).__name__})", reason="network")
    return HttpError(str(reason) or type(reason).__name__, reason="network")


class HttpHost:
    """JSON over HTTP to one host, with the API key header and an outage-aware logger."""

    def __init__(self, name: str, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        self._outage_logged = False

    @property
    def has_key(self) -> bool:
        """True when requests carry an API key."""
        return bool(self._api_key)

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Send one request; the decoded JSON answer (None for an empty body). Raises ``HttpError``."""
        data = json.dumps(body).encode("utf-8") if body is not None else (b"" if method == "POST" else None)
        url = f"{self.base_url}{path}"
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if self._api_key:
            req.add_header("X-Api-Key", self._api_key)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                message = answer_message(exc.read(4096))
            except OSError:
                message = ""
            text = f"HTTP {exc.code} {exc.reason}" + (f": {message}" if message else "")
            raise HttpError(text, status=exc.code) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _network_error(exc, url, timeout) from None
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise HttpError("the answer is not JSON") from None

    def note_failure(self, what: str, error: Exception, hint: str = "") -> None:
        """Log a failed poll: a warning at the start of an outage, debug while it lasts."""
        if not self._outage_logged:
            log.warning(
                "%s at %s: %s failed: %s%s; alerts do not count frames until it answers (asking again "
                "each poll)",
                self.name,
                self.base_url,
                what,
                error,
                f" ({hint})" if hint else "",
            )
            self._outage_logged = True
        else:
            log.debug("%s still unreachable: %s", self.name, error)

    def note_success(self) -> None:
        """Log the end of an outage."""
        if self._outage_logged:
            log.info("%s at %s answers again", self.name, self.base_url)
            self._outage_logged = False
