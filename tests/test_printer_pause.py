"""A pause that lands: the printer watcher's thread asks until the printer reports paused.

Against ``FakeOctoPrint`` (tests/printer_hosts.py), a real HTTP server on 127.0.0.1 that can be made
to refuse pause requests: a real OctoPrint cannot be made to answer 503 on demand. Waits are on
conditions with deadlines; nothing asserts on timings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import pytest

from agent.config.printer import PrinterSettings
from agent.printer import PauseOutcome, PauseRequest, PrinterWatcher, PrintStatus, make_printer
from tests.printer_hosts import FakeOctoPrint

API_KEY = "0123456789ABCDEF0123456789ABCDEF"
KEY_ENV = "TEST_PAUSE_OCTOPRINT_KEY"


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def octoprint() -> Iterator[FakeOctoPrint]:
    server = FakeOctoPrint(API_KEY)
    yield server
    server.close()


@pytest.fixture
def settings(octoprint: FakeOctoPrint, monkeypatch: pytest.MonkeyPatch) -> PrinterSettings:
    monkeypatch.setenv(KEY_ENV, API_KEY)
    return PrinterSettings(
        kind="octoprint",
        url=octoprint.url,
        api_key_env=KEY_ENV,
        timeout_s=2,
        poll_interval_s=0.1,
        retry_delay_s=0.05,
        pause_confirm_s=2,
    )


def watch(settings: PrinterSettings) -> tuple[PrinterWatcher, list[PauseOutcome]]:
    outcomes: list[PauseOutcome] = []
    watcher = PrinterWatcher(make_printer(settings), settings, on_outcome=outcomes.append)
    watcher.start()
    return watcher, outcomes


def request(episode: int = 2, *, at: float | None = None, restored: bool = False) -> PauseRequest:
    return PauseRequest("benchy.gcode", episode, "spaghetti", time.time() if at is None else at, restored)


def test_a_pause_answered_503_three_times_lands_once_and_says_how_long_it_took(
    octoprint: FakeOctoPrint, settings: PrinterSettings, caplog: pytest.LogCaptureFixture
) -> None:
    octoprint.fail_pauses = [503, 503, 503]
    watcher, outcomes = watch(settings)
    try:
        assert watcher.state().status == PrintStatus.PRINTING, "the first reading is there at start"
        with caplog.at_level(logging.INFO, logger="agent.printer"):
            watcher.request_pause(request(at=time.time() - 1.5))
            wait_for(lambda: bool(outcomes), "the pause to land")
    finally:
        watcher.close()
    assert [(o.outcome, o.requests) for o in outcomes] == [("landed", 4)]
    assert outcomes[0].seconds >= 1.5, "measured from the alert"
    assert [c.status for c in octoprint.pauses] == [503, 503, 503, 204]
    assert octoprint.pauses_done == 1 and octoprint.state == "Paused"
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 3 and all("HTTP 503 Service Unavailable" in m for m in failed)
    landed = [r.getMessage() for r in caplog.records if "is paused" in r.getMessage()]
    assert len(landed) == 1 and "after 4 pause requests" in landed[0]
    assert f"{outcomes[0].seconds:.1f} s after the alert" in landed[0]
    assert watcher.stats()["last_pause"] == {
        "outcome": "landed",
        "requests": 4,
        "seconds": round(outcomes[0].seconds, 3),
    }


def test_the_same_alert_is_paused_once(octoprint: FakeOctoPrint, settings: PrinterSettings) -> None:
    octoprint.fail_pauses = [503]
    watcher, outcomes = watch(settings)
    try:
        watcher.request_pause(request())
        watcher.request_pause(request())  # the stage asked again for the same episode
        wait_for(lambda: bool(outcomes), "the pause to land")
        watcher.request_pause(request())  # and once more after it landed: a new job, which sees it paused
        wait_for(lambda: len(outcomes) == 2, "the second request to settle")
    finally:
        watcher.close()
    assert octoprint.pauses_done == 1
    assert [(o.outcome, o.requests) for o in outcomes] == [("landed", 2), ("landed", 0)]


def test_a_print_that_ends_while_the_host_refuses_ends_the_pause(
    octoprint: FakeOctoPrint, settings: PrinterSettings
) -> None:
    octoprint.fail_pauses = [503] * 1000
    watcher, outcomes = watch(settings)
    try:
        watcher.request_pause(request())
        wait_for(lambda: len(octoprint.pauses) >= 2, "a retry")
        octoprint.state = "Operational"  # the user cancelled the print
        wait_for(lambda: bool(outcomes), "the pause to end")
    finally:
        watcher.close()
    assert outcomes[0].outcome == "ended" and "Operational" in outcomes[0].detail
    assert octoprint.pauses_done == 0


def test_an_accepted_pause_that_does_not_show_is_asked_for_again(
    octoprint: FakeOctoPrint, settings: PrinterSettings
) -> None:
    class Ignoring(FakeOctoPrint):
        """Answers 204 to the first pause but keeps printing (a firmware that missed the command)."""

        def answer(self, call):  # type: ignore[no-untyped-def]
            if call.method == "POST" and not self.pauses[:-1]:
                return 204, None
            return super().answer(call)

    host = Ignoring(API_KEY)
    try:
        mine = settings.model_copy(update={"url": host.url, "pause_confirm_s": 0.3})
        watcher, outcomes = watch(mine)
        try:
            watcher.request_pause(request())
            wait_for(lambda: bool(outcomes), "the pause to land")
        finally:
            watcher.close()
    finally:
        host.close()
    assert [(o.outcome, o.requests) for o in outcomes] == [("landed", 2)]
    assert host.state == "Paused"


def test_a_host_that_hangs_does_not_hold_up_the_caller(
    octoprint: FakeOctoPrint, settings: PrinterSettings
) -> None:
    octoprint.hang_s = 60.0
    slow = settings.model_copy(update={"timeout_s": 30})
    watcher = PrinterWatcher(make_printer(slow), slow)
    watcher.start(first_state_timeout_s=0.2)
    try:
        wait_for(lambda: len(octoprint.calls) >= 1, "the first poll")
        # the poll hangs on the watcher's thread; the latest state is there at once, as often as asked
        states = [watcher.state() for _ in range(1000)]
        watcher.request_pause(request())
    finally:
        watcher.close()
        octoprint.close()
    assert {s.status for s in states} == {PrintStatus.UNKNOWN}
    assert octoprint.pauses == [], "the pause waits behind the hanging poll"
