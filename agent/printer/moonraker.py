"""Moonraker's HTTP API (Klipper): ``print_stats`` for the job, ``/printer/print/pause`` to pause.

``GET /printer/objects/query?print_stats`` gives ``state`` (standby, printing, paused, complete,
cancelled, error), ``filename``, ``print_duration`` (excludes pauses) and ``total_duration`` (wall
time since the job started). Answers are wrapped in ``{"result": ...}``; errors in
``{"error": {"code", "message", "traceback"}}``. With ``[authorization]`` on, a request from an
untrusted client needs an API key in ``X-Api-Key`` and is otherwise answered 401.
"""

from __future__ import annotations

from typing import Any

from agent.printer.client import HttpPrinterClient
from agent.printer.state import PrintState, PrintStatus

_MOONRAKER_STATUS = {"printing": PrintStatus.PRINTING, "paused": PrintStatus.PAUSED}


def parse_moonraker_print_stats(answer: Any, now: float) -> PrintState:
    """The ``PrintState`` in a ``print_stats`` query answer; ``ValueError`` when it has none."""
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
    return PrintState.read(status, raw, now, name, elapsed, started_at)


class MoonrakerClient(HttpPrinterClient):
    """Moonraker's HTTP API: ``print_stats`` for the job, ``/printer/print/pause`` to pause."""

    name = "Moonraker"
    STATE_PATH = "/printer/objects/query?print_stats"
    PAUSE_PATH = "/printer/print/pause"
    INFO_PATH = "/server/info"
    KEY_FIX = (
        "give the agent a Moonraker API key (printer.api_key_env or printer.api_key_file; "
        "`curl http://<host>:7125/access/api_key` on the printer host prints it), or add this machine to "
        "trusted_clients in the [authorization] section of moonraker.conf"
    )
    URL_FIX = "set printer.url to Moonraker's API, usually port 7125, e.g. http://mainsailos.local:7125"
    parse_state = staticmethod(parse_moonraker_print_stats)
