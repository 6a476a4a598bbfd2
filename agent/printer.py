"""The 3D printer beside the camera: its job state, a pause button and its webcam URLs.

Two hosts are supported over their HTTP APIs (stdlib ``urllib``, no extra dependency):

- **OctoPrint**: ``GET /api/job`` gives ``state`` ("Printing", "Paused", "Operational", ...),
  ``job.file.name`` and ``progress.printTime``; ``POST /api/job`` with
  ``{"command": "pause", "action": "pause"}`` pauses (204; 409 when nothing is printing).
  Requests carry the API key in ``X-Api-Key``.
- **Moonraker** (Klipper): ``GET /printer/objects/query?print_stats`` gives ``state``
  (standby, printing, paused, complete, cancelled, error), ``filename``, ``print_duration``
  (excludes pauses) and ``total_duration`` (wall time since the job started);
  ``POST /printer/print/pause`` pauses. Responses are wrapped in ``{"result": ...}``.

The printer may be switched off or its host rebooting: every request error is logged
(once per outage, then at debug level) and answered with ``PrintState.unknown``; the
caller simply asks again at the next poll. Nothing here raises on network trouble.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from agent.config.printer import PrinterSettings
from agent.errors import ConfigError
from agent.utc import utc_compact

log = logging.getLogger(__name__)


class PrintStatus(StrEnum):
    """What the printer is doing, reduced to what alerting needs."""

    PRINTING = "printing"
    PAUSED = "paused"
    IDLE = "idle"
    """No job running: operational, finished, cancelled, errored or disconnected from the host."""
    UNKNOWN = "unknown"
    """The host did not answer (switched off, rebooting, wrong URL or key)."""


@dataclass(frozen=True, slots=True)
class PrintState:
    """One reading of the printer's job.

    ``elapsed_s`` is the time into the job as the printer counts it (OctoPrint ``printTime``,
    Moonraker ``print_duration``): it excludes pauses, so it never goes backwards within one
    print. ``started_at`` (epoch seconds) is only set where it is stable for the whole print
    (Moonraker: now minus ``total_duration``); OctoPrint's API offers nothing as stable, so it
    is None there. ``raw_state`` is the host's own word for the state.
    """

    status: PrintStatus
    job_name: str | None = None
    elapsed_s: float | None = None
    started_at: float | None = None
    raw_state: str = ""
    checked_at: float = 0.0

    @classmethod
    def unknown(cls, checked_at: float, why: str = "") -> PrintState:
        """The host could not be asked."""
        return cls(PrintStatus.UNKNOWN, raw_state=why, checked_at=checked_at)

    @classmethod
    def untracked(cls, checked_at: float = 0.0) -> PrintState:
        """No printer integration: always 'printing' one job without a name."""
        return cls(PrintStatus.PRINTING, raw_state="no printer configured", checked_at=checked_at)

    @property
    def print_id(self) -> str | None:
        """A readable identity: the job name plus its start time when known."""
        if self.job_name is None:
            return None
        if self.started_at is None:
            return self.job_name
        return f"{self.job_name}@{utc_compact(self.started_at)}"


@dataclass(frozen=True, slots=True)
class WebcamUrls:
    """The MJPEG stream and single-JPEG snapshot URLs of the printer's webcam."""

    stream: str
    snapshot: str


class PrinterClient(Protocol):
    """What the agent needs from a printer host."""

    def get_state(self) -> PrintState:
        """The job state now; ``PrintStatus.UNKNOWN`` when the host does not answer."""
        ...

    def pause(self, reason: str) -> bool:
        """Ask the host to pause the job; True when it accepted. ``reason`` is logged."""
        ...


def resolve_api_key(settings: PrinterSettings) -> str | None:
    """The API key from ``api_key_env`` or ``api_key_file``; None when neither is set.

    Raises ``ConfigError`` when the named variable or file is missing or empty.
    """
    if settings.api_key_env:
        value = os.environ.get(settings.api_key_env, "").strip()
        if not value:
            raise ConfigError(
                f"printer.api_key_env names {settings.api_key_env!r} but that environment variable is "
                f"not set or empty: export {settings.api_key_env}=<your API key> before starting the agent"
            )
        return value
    if settings.api_key_file:
        try:
            lines = settings.api_key_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(
                f"printer.api_key_file {str(settings.api_key_file)!r} cannot be read ({exc.strerror}): "
                "create it with the API key on its first line, readable by the agent's user"
            ) from exc
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(
                f"printer.api_key_file {str(settings.api_key_file)!r} is empty: put the API key on its first line"
            )
        return value
    return None


def webcam_urls(settings: PrinterSettings) -> WebcamUrls | None:
    """The webcam's stream and snapshot URLs for this printer host, None for ``kind: none``.

    OctoPrint (OctoPi's haproxy) and Mainsail/Fluidd with crowsnest both serve
    ``/webcam/?action=stream`` and ``/webcam/?action=snapshot``; Moonraker's own port (7125)
    does not, so for Moonraker the default base is the same host without the port.
    """
    if settings.kind == "none":
        return None
    base = settings.webcam_base_url
    if not base:
        if settings.kind == "octoprint":
            base = settings.url
        else:
            parts = urllib.parse.urlsplit(settings.url)
            host = parts.hostname or ""
            if ":" in host:  # IPv6 literal
                host = f"[{host}]"
            base = f"{parts.scheme}://{host}"
    root = base.rstrip("/")
    return WebcamUrls(stream=f"{root}/webcam/?action=stream", snapshot=f"{root}/webcam/?action=snapshot")


class _HttpError(Exception):
    """A request that failed; ``status`` is the HTTP status when the host answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _HttpHost:
    """JSON over HTTP to one host, with the API key header and an outage-aware logger."""

    def __init__(self, name: str, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.timeout_s = timeout_s
        self._down_since_logged = False

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; the decoded JSON answer (None for an empty body). Raises ``_HttpError``."""
        data = json.dumps(body).encode("utf-8") if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method)
        req.add_header("Accept", "application/json")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        if self._api_key:
            req.add_header("X-Api-Key", self._api_key)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            raise _HttpError(f"HTTP {exc.code} {exc.reason}{detail}", status=exc.code) from exc
        except urllib.error.URLError as exc:
            raise _HttpError(f"cannot connect ({exc.reason})") from exc
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise _HttpError(f"no answer ({exc!r})") from exc
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise _HttpError(f"answer is not JSON ({exc})") from exc

    def note_failure(self, what: str, error: Exception) -> None:
        """Log a failed poll: a warning at the start of an outage, debug while it lasts."""
        if not self._down_since_logged:
            log.warning(
                "%s at %s: %s failed: %s; alerts pause counting until it answers (retrying each poll)",
                self.name,
                self.base_url,
                what,
                error,
            )
            self._down_since_logged = True
        else:
            log.debug("%s still unreachable: %s", self.name, error)

    def note_success(self) -> None:
        """Log the end of an outage."""
        if self._down_since_logged:
            log.info("%s at %s answers again", self.name, self.base_url)
            self._down_since_logged = False


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(300).decode("utf-8", "replace").strip()
    except OSError:
        return ""
    return f": {text}" if text else ""


class _HttpPrinterClient:
    """What the HTTP printer clients share: construction, the state poll and pause-with-retries.

    A subclass names its host (``_HOST_NAME``), the state request (``_STATE_PATH``) and its parser
    (``_parse_state``), and the pause request (``_PAUSE_PATH``, ``_PAUSE_BODY``).
    """

    _HOST_NAME: ClassVar[str]
    _STATE_PATH: ClassVar[str]
    _PAUSE_PATH: ClassVar[str]
    _PAUSE_BODY: ClassVar[dict[str, Any] | None] = None

    def __init__(
        self,
        settings: PrinterSettings,
        api_key: str | None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._http = _HttpHost(self._HOST_NAME, settings.url, api_key, settings.timeout_s)
        self._clock = clock
        self._sleep = sleep

    @staticmethod
    def _parse_state(answer: Any, now: float) -> PrintState:
        raise NotImplementedError

    def get_state(self) -> PrintState:
        """The job state now (``PrintStatus.UNKNOWN`` when the host does not answer)."""
        now = self._clock()
        try:
            answer = self._http.request("GET", self._STATE_PATH)
            state = self._parse_state(answer, now)
        except (_HttpError, ValueError) as exc:
            self._http.note_failure(f"GET {self._STATE_PATH}", exc)
            return PrintState.unknown(now, str(exc))
        self._http.note_success()
        return state

    def pause(self, reason: str) -> bool:
        """Ask the host to pause the job, retrying network errors and 5xx answers.

        Returns True when the host accepted, False otherwise (the failure is logged).
        """
        attempts = self._settings.pause_attempts
        for attempt in range(1, attempts + 1):
            log.warning(
                "pausing the print on %s (attempt %d/%d) because %s",
                self._http.name,
                attempt,
                attempts,
                reason,
            )
            try:
                self._http.request("POST", self._PAUSE_PATH, self._PAUSE_BODY)
            except _HttpError as exc:
                retryable = exc.status is None or exc.status >= 500
                if not retryable:
                    log.error("%s refused to pause: %s (not retried)", self._http.name, exc)
                    return False
                log.error("pause request to %s failed: %s", self._http.name, exc)
                if attempt < attempts:
                    self._sleep(self._settings.retry_delay_s)
                continue
            log.warning("%s accepted the pause", self._http.name)
            return True
        log.error("gave up pausing the print on %s after %d attempts", self._http.name, attempts)
        return False


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# OctoPrint's state strings (``octoprint.util.comm``); anything else maps to IDLE.
_OCTOPRINT_PAUSED = ("Pausing", "Paused")
_OCTOPRINT_PRINTING = ("Printing", "Starting", "Resuming", "Finishing", "Sending file to SD")


def _parse_octoprint_job(answer: Any, now: float) -> PrintState:
    if not isinstance(answer, dict) or not isinstance(answer.get("state"), str):
        raise ValueError("unexpected /api/job answer (no 'state')")
    raw = answer["state"]
    if raw.startswith(_OCTOPRINT_PAUSED):
        status = PrintStatus.PAUSED
    elif raw.startswith(_OCTOPRINT_PRINTING):
        status = PrintStatus.PRINTING
    else:
        status = PrintStatus.IDLE
    job = _as_dict(answer.get("job"))
    file_info = _as_dict(job.get("file"))
    name = file_info.get("name") or file_info.get("path") or None
    elapsed = _as_dict(answer.get("progress")).get("printTime")
    return PrintState(
        status=status,
        job_name=str(name) if name else None,
        elapsed_s=float(elapsed) if isinstance(elapsed, int | float) else None,
        started_at=None,
        raw_state=raw,
        checked_at=now,
    )


class OctoPrintClient(_HttpPrinterClient):
    """OctoPrint's REST API: job state from ``/api/job``, pause through ``POST /api/job``."""

    _HOST_NAME = "OctoPrint"
    _STATE_PATH = "/api/job"
    _PAUSE_PATH = "/api/job"
    _PAUSE_BODY: ClassVar[dict[str, Any] | None] = {"command": "pause", "action": "pause"}
    _parse_state = staticmethod(_parse_octoprint_job)


_MOONRAKER_STATUS = {"printing": PrintStatus.PRINTING, "paused": PrintStatus.PAUSED}


def _parse_moonraker_print_stats(answer: Any, now: float) -> PrintState:
    try:
        stats = answer["result"]["status"]["print_stats"]
        raw = stats["state"]
    except (KeyError, TypeError) as exc:
        raise ValueError("unexpected print_stats answer (no result.status.print_stats.state)") from exc
    if not isinstance(raw, str):
        raise ValueError("unexpected print_stats.state")
    status = _MOONRAKER_STATUS.get(raw, PrintStatus.IDLE)
    name = stats.get("filename") or None
    elapsed = stats.get("print_duration")
    total = stats.get("total_duration")
    started_at = None
    if status != PrintStatus.IDLE and isinstance(total, int | float) and total > 0:
        started_at = now - float(total)
    return PrintState(
        status=status,
        job_name=str(name) if name else None,
        elapsed_s=float(elapsed) if isinstance(elapsed, int | float) else None,
        started_at=started_at,
        raw_state=raw,
        checked_at=now,
    )


class MoonrakerClient(_HttpPrinterClient):
    """Moonraker's HTTP API: ``print_stats`` for the job, ``/printer/print/pause`` to pause."""

    _HOST_NAME = "Moonraker"
    _STATE_PATH = "/printer/objects/query?print_stats"
    _PAUSE_PATH = "/printer/print/pause"
    _parse_state = staticmethod(_parse_moonraker_print_stats)


class NoPrinter:
    """``kind: none``: always one untracked print; pausing is impossible and says so."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def get_state(self) -> PrintState:
        """Always ``PrintState.untracked``."""
        return PrintState.untracked(self._clock())

    def pause(self, reason: str) -> bool:
        """Log that no printer is configured to pause; returns False."""
        log.error(
            "cannot pause (%s): no printer configured; set printer.kind to octoprint or moonraker", reason
        )
        return False


def make_printer(
    settings: PrinterSettings,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> PrinterClient:
    """The client for ``settings.kind``, with its API key resolved (``ConfigError`` if missing)."""
    if settings.kind == "none":
        return NoPrinter(clock=clock)
    api_key = resolve_api_key(settings)
    if settings.kind == "octoprint":
        if api_key is None:
            log.warning("printer.kind is octoprint without an API key: OctoPrint will likely answer 403")
        return OctoPrintClient(settings, api_key, clock=clock, sleep=sleep)
    return MoonrakerClient(settings, api_key, clock=clock, sleep=sleep)


class PrinterWatcher:
    """Caches the printer's state and polls at most every ``poll_interval_s``.

    No thread: call ``state()`` from the stage that needs it (e.g. once per sampled frame).
    While the host does not answer, the interval doubles up to 60 s so a switched-off
    printer does not cost a connection timeout on every frame.
    """

    MAX_BACKOFF_S = 60.0

    def __init__(
        self,
        client: PrinterClient,
        poll_interval_s: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.poll_interval_s = poll_interval_s
        self._monotonic = monotonic
        self._next_poll = float("-inf")
        self._failures = 0
        self._last: PrintState | None = None

    def state(self) -> PrintState:
        """The last reading, refreshed when the poll interval has passed."""
        now = self._monotonic()
        if self._last is None or now >= self._next_poll:
            self._last = self.client.get_state()
            if self._last.status == PrintStatus.UNKNOWN:
                self._failures += 1
                delay = min(self.poll_interval_s * 2 ** (self._failures - 1), self.MAX_BACKOFF_S)
            else:
                self._failures = 0
                delay = self.poll_interval_s
            self._next_poll = now + max(delay, self.poll_interval_s)
        return self._last
