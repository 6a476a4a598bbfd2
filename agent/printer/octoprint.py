"""OctoPrint's REST API: the job state from ``GET /api/job``, pause through ``POST /api/job``.

``GET /api/job`` gives ``state`` (OctoPrint's ``MachineCom.getStateString()``), ``job.file.name`` and
``progress.printTime``; ``POST /api/job`` with ``{"command": "pause", "action": "pause"}`` pauses
(204; 409 when nothing is printing). Every request carries the API key in ``X-Api-Key`` (an
application key from Settings > Application Keys); a wrong or missing key is answered 403.
"""

from __future__ import annotations

from typing import Any, ClassVar

from agent.printer.client import HttpPrinterClient
from agent.printer.state import PrintState, PrintStatus

# OctoPrint 1.11's state strings (``octoprint.util.comm.MachineCom.getStateString``). Streaming a
# file to the printer's SD card ("Starting to send file to SD", "Sending file to SD", "Transferring
# file to SD") moves no axis: it is not printing. Everything not listed here is IDLE.
OCTOPRINT_PRINTING = frozenset(
    {"Starting", "Starting print from SD", "Printing", "Printing from SD", "Resuming", "Finishing"}
)
OCTOPRINT_PAUSED = frozenset({"Pausing", "Paused"})


def octoprint_status(raw: str) -> PrintStatus:
    """Our status for one of OctoPrint's state strings."""
    if raw in OCTOPRINT_PAUSED:
        return PrintStatus.PAUSED
    if raw in OCTOPRINT_PRINTING:
        return PrintStatus.PRINTING
    return PrintStatus.IDLE


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_octoprint_job(answer: Any, now: float) -> PrintState:
    """The ``PrintState`` in an ``/api/job`` answer; ``ValueError`` when it has no ``state``."""
    if not isinstance(answer, dict) or not isinstance(answer.get("state"), str):
        raise ValueError("unexpected /api/job answer (no 'state')")
    raw = answer["state"]
    file_info = _as_dict(_as_dict(answer.get("job")).get("file"))
    name = file_info.get("name") or file_info.get("path") or None
    elapsed = _as_dict(answer.get("progress")).get("printTime")
    return PrintState.read(octoprint_status(raw), raw, now, name, elapsed)


class OctoPrintClient(HttpPrinterClient):
    """OctoPrint's REST API: job state from ``/api/job``, pause through ``POST /api/job``."""

    name = "OctoPrint"
    STATE_PATH = "/api/job"
    PAUSE_PATH = "/api/job"
    PAUSE_BODY: ClassVar[dict[str, Any] | None] = {"command": "pause", "action": "pause"}
    VERSION_PATH = "/api/version"
    KEY_FIX = (
        "create an application key in OctoPrint (Settings > Application Keys) and give it to the agent "
        "with printer.api_key_env (the name of an environment variable holding it) or printer.api_key_file"
    )
    URL_FIX = "set printer.url to the address of OctoPrint's web interface, e.g. http://octopi.local"
    parse_state = staticmethod(parse_octoprint_job)
