"""A pause that lands: one alert's pause request, asked for until the printer reports paused.

``PauseJob`` is the logic, with no thread and no clock of its own: the watcher thread
(``agent.printer.watcher``) feeds it every state it polls (``on_state``) and lets it send a request
when one is due (``attempt``). The job ends when the printer reports paused (or pausing): *landed*;
or when the print it was for is gone (finished, cancelled, another job started): *ended*. Until
then a failed request (no answer, a 5xx, a refusal) is sent again after ``retry_delay_s``, doubling
up to ``retry_max_delay_s``; a request the host accepted is sent again only when the printer has not
reported paused ``pause_confirm_s`` later. The state is read before every request, so a pause that
went through while its answer was lost is never sent a second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from agent.config.printer import PrinterSettings
from agent.printer.client import PrinterClient
from agent.printer.state import PrintState, PrintStatus

log = logging.getLogger(__name__)

CONFIRM_POLL_S = 1.0  # while waiting for an accepted pause to show, the state is read this often


@dataclass(frozen=True, slots=True)
class PauseRequest:
    """Pause the print for one ``act`` alert. ``episode`` tells the alerts of one print apart (how many
    alerts the print had when this one fired); ``requested_at`` is when it fired (epoch seconds);
    ``restored`` is True for a request carried over an agent restart."""

    print_name: str | None
    episode: int
    reason: str
    requested_at: float
    restored: bool = False


@dataclass(frozen=True, slots=True)
class PauseOutcome:
    """Event: how a pause request ended. ``outcome`` is ``landed`` (the printer reports paused) or
    ``ended`` (the print is gone); ``requests`` how many pause requests were sent, ``seconds`` the
    time from the alert to the outcome, ``detail`` the words for the log."""

    request: PauseRequest
    outcome: Literal["landed", "ended"]
    requests: int
    seconds: float
    detail: str


class PauseJob:
    """The pause of one alert, from the first request to a printer that reports paused."""

    def __init__(
        self, request: PauseRequest, settings: PrinterSettings, host: str, monotonic_now: float
    ) -> None:
        self.request = request
        self.settings = settings
        self.host = host
        self.requests = 0
        self._failures = 0
        self._accepted = False
        self.next_attempt_at = monotonic_now  # monotonic seconds
        self.last_error = ""

    def poll_interval(self, normal_s: float) -> float:
        """How often the state should be read while this job runs (sooner while a pause should show)."""
        return min(normal_s, CONFIRM_POLL_S) if self._accepted else normal_s

    def on_state(self, state: PrintState, wall_now: float) -> PauseOutcome | None:
        """Look at a state reading; the outcome when it settles the job."""
        if state.status == PrintStatus.PAUSED:
            return self._finish("landed", wall_now, f"{self.host} reports {state.raw_state or 'paused'}")
        if state.status == PrintStatus.IDLE:
            why = f"the print ended before it was paused ({self.host} reports {state.raw_state or 'idle'})"
            return self._finish("ended", wall_now, why)
        name = self.request.print_name
        if state.status == PrintStatus.PRINTING and name is not None and state.job_name not in (None, name):
            return self._finish("ended", wall_now, f"another print ({state.job_name!r}) replaced {name!r}")
        return None

    def attempt(self, client: PrinterClient, monotonic_now: float) -> None:
        """Send one pause request and plan the next step."""
        self.requests += 1
        answer = client.request_pause()
        if answer.accepted:
            self._accepted, self._failures = True, 0
            self.next_attempt_at = monotonic_now + self.settings.pause_confirm_s
            log.warning(
                "%s accepted pause request %d; waiting up to %g s for it to report paused",
                self.host,
                self.requests,
                self.settings.pause_confirm_s,
            )
            return
        self._accepted = False
        self._failures += 1
        self.last_error = answer.detail
        delay = min(self.settings.retry_delay_s * 2 ** (self._failures - 1), self.settings.retry_max_delay_s)
        self.next_attempt_at = monotonic_now + delay
        log.error(
            "pause request %d to %s failed: %s; asking again in %g s (until the printer reports paused "
            "or the print ends)",
            self.requests,
            self.host,
            answer.detail,
            delay,
        )

    def _finish(self, outcome: Literal["landed", "ended"], wall_now: float, why: str) -> PauseOutcome:
        seconds = max(0.0, wall_now - self.request.requested_at)
        if outcome == "landed":
            log.warning(
                "the print %s is paused: %s after %d pause request%s, %.1f s after the alert",
                repr(self.request.print_name) if self.request.print_name else "on the camera",
                why,
                self.requests,
                "" if self.requests == 1 else "s",
                seconds,
            )
        else:
            log.warning("pause of print %r given up: %s", self.request.print_name, why)
        return PauseOutcome(self.request, outcome, self.requests, seconds, why)
