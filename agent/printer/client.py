"""What the agent asks of a printer host, and the part of it every HTTP host shares.

A client answers two questions, each with one HTTP request and no retries of its own: the job state
now (``get_state``, ``PrintStatus.UNKNOWN`` when the host does not answer) and "please pause"
(``request_pause``). Retrying a pause until it lands is the job of ``agent.printer.pause``; polling
on a thread of its own is the job of ``agent.printer.watcher``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from agent.config.printer import PrinterSettings
from agent.printer.http import HttpError, HttpHost
from agent.printer.state import PrintState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PauseAnswer:
    """The host's answer to one pause request: ``accepted`` (2xx), else ``detail`` says why not."""

    accepted: bool
    detail: str = ""
    status: int | None = None


@dataclass(frozen=True, slots=True)
class HostProblem:
    """Why a host cannot be used, in words: ``detail`` (what is wrong), ``fix`` (what to do) and
    ``kind``: ``unreachable`` (nothing answers), ``rejected`` (the API key), ``wrong_url`` (something
    answers, but not this host's API) or ``host`` (the host answers with an error of its own)."""

    kind: str
    detail: str
    fix: str


class PrinterClient(Protocol):
    """What the agent needs from a printer host."""

    @property
    def name(self) -> str:
        """The host's name for the log, e.g. ``OctoPrint``."""
        ...

    def get_state(self) -> PrintState:
        """The job state now; ``PrintStatus.UNKNOWN`` when the host does not answer."""
        ...

    def request_pause(self) -> PauseAnswer:
        """Ask the host once to pause the job."""
        ...


class HttpPrinterClient:
    """What the HTTP printer clients share: construction, the state poll, one pause request and
    the words for a failure.

    A subclass names its host (``name``), the state request (``STATE_PATH``) and its parser
    (``parse_state``), the pause request (``PAUSE_PATH``, ``PAUSE_BODY``), and how to fix a refused
    key (``KEY_FIX``) or a wrong URL (``URL_FIX``).
    """

    name: ClassVar[str]
    STATE_PATH: ClassVar[str]
    PAUSE_PATH: ClassVar[str]
    PAUSE_BODY: ClassVar[dict[str, Any] | None] = None
    KEY_FIX: ClassVar[str]
    URL_FIX: ClassVar[str]

    def __init__(
        self, settings: PrinterSettings, api_key: str | None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.http = HttpHost(self.name, settings.url, api_key, settings.timeout_s)
        self._clock = clock

    @staticmethod
    def parse_state(answer: Any, now: float) -> PrintState:
        """The ``PrintState`` in the host's answer to ``STATE_PATH``; ``ValueError`` when it has none."""
        raise NotImplementedError

    def get_state(self) -> PrintState:
        """The job state now (``PrintStatus.UNKNOWN`` when the host does not answer)."""
        now = self._clock()
        try:
            state = self.parse_state(self.http.request("GET", self.STATE_PATH), now)
        except HttpError as exc:
            self.http.note_failure(f"GET {self.STATE_PATH}", exc, self.explain(exc).fix)
            return PrintState.unknown(now, str(exc))
        except ValueError as exc:
            self.http.note_failure(f"GET {self.STATE_PATH}", exc, self.URL_FIX)
            return PrintState.unknown(now, str(exc))
        self.http.note_success()
        return state

    def request_pause(self) -> PauseAnswer:
        """Ask the host once to pause the job (``POST PAUSE_PATH``)."""
        try:
            self.http.request("POST", self.PAUSE_PATH, self.PAUSE_BODY)
        except HttpError as exc:
            return PauseAnswer(False, str(exc), exc.status)
        return PauseAnswer(True)

    def explain(self, error: HttpError) -> HostProblem:
        """What ``error`` means for this host, and what to do about it."""
        url = self.http.base_url
        if error.status is None:
            if error.reason == "answer":  # it answered, but not with JSON
                return HostProblem(
                    "wrong_url", f"{url} answers, but not like {self.name}'s API", self.URL_FIX
                )
            return HostProblem(
                "unreachable",
                f"nothing answers at {url} ({error})",
                f"check printer.url and that {self.name} is running and reachable from this machine",
            )
        if error.status in (401, 403):
            what = "the API key is rejected" if self.http.has_key else f"{self.name} wants an API key"
            return HostProblem("rejected", f"{what} ({error})", self.KEY_FIX)
        if error.status == 404:
            return HostProblem(
                "wrong_url", f"{url} answers, but not like {self.name}'s API ({error})", self.URL_FIX
            )
        return HostProblem("host", f"{self.name} at {url} answers {error}", f"look at {self.name}'s own log")


class NoPrinter:
    """``kind: none``: always one untracked print; pausing is impossible and says so."""

    name = "no printer"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def get_state(self) -> PrintState:
        """Always ``PrintState.untracked``."""
        return PrintState.untracked(self._clock())

    def request_pause(self) -> PauseAnswer:
        """Log that no printer is configured to pause; never accepted."""
        log.error("cannot pause: no printer configured; set printer.kind to octoprint or moonraker")
        return PauseAnswer(False, "no printer configured")
