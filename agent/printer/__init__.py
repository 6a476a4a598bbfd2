"""The 3D printer beside the camera: its job state, a pause that lands, a check before the run.

- ``state``: ``PrintStatus`` and ``PrintState``, what the alerts need to know of the job;
- ``http``: the HTTP client every host shares, with failures as one readable line;
- ``client``: what a host must answer (``PrinterClient``) and what HTTP hosts share;
- ``octoprint``, ``moonraker``: the two hosts' APIs;
- ``hosts``: from the ``printer`` config section to a client (API key, webcam URLs);
- ``pause``: one alert's pause, asked for until the printer reports paused;
- ``watcher``: the thread that polls the host and carries out pauses;
- ``check``: reach the host before the run and say what is wrong.

The printer may be switched off or its host rebooting: a failed poll is logged once per outage and
read as ``PrintStatus.UNKNOWN``; nothing here raises on network trouble.
"""

from agent.config.printer import PrinterSettings
from agent.printer.check import PrinterCheck, check_printer
from agent.printer.client import HostProblem, NoPrinter, PauseAnswer, PrinterClient
from agent.printer.hosts import WebcamUrls, http_client, make_printer, resolve_api_key, webcam_urls
from agent.printer.moonraker import MoonrakerClient
from agent.printer.octoprint import OctoPrintClient
from agent.printer.pause import PauseOutcome, PauseRequest
from agent.printer.state import PrintState, PrintStatus
from agent.printer.watcher import PrinterWatcher

__all__ = [
    "HostProblem",
    "MoonrakerClient",
    "NoPrinter",
    "OctoPrintClient",
    "PauseAnswer",
    "PauseOutcome",
    "PauseRequest",
    "PrintState",
    "PrintStatus",
    "PrinterCheck",
    "PrinterClient",
    "PrinterSettings",
    "PrinterWatcher",
    "WebcamUrls",
    "check_printer",
    "http_client",
    "make_printer",
    "resolve_api_key",
    "webcam_urls",
]
