"""Reach the printer host before the run and say in one line whether it works, and if not, why.

``check_printer(settings, timeout_s)`` is what ``edge-agent run --check``, ``edge-agent doctor`` and
the agent's start-up ask: it resolves the API key, asks the host who it is (OctoPrint
``/api/version``, Moonraker ``/server/info``) and what the job is doing, and returns a
``PrinterCheck``: ``OK``, ``WARN`` (it answers, but its printer is not ready), ``FAIL`` (with what
is wrong and how to fix it) or ``SKIP`` (``printer.kind: none``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from agent.config.printer import PrinterSettings
from agent.errors import ConfigError
from agent.printer.client import HostProblem, HttpPrinterClient
from agent.printer.hosts import http_client, resolve_api_key
from agent.printer.http import HttpError
from agent.printer.moonraker import MoonrakerClient
from agent.printer.octoprint import OctoPrintClient

Level = Literal["OK", "WARN", "FAIL", "SKIP"]
CONFIG_PROBLEMS = ("config", "rejected", "wrong_url")  # fixed in the config, not by waiting


@dataclass(frozen=True, slots=True)
class PrinterCheck:
    """The verdict on the printer host. ``problem`` is "" when it works, else ``config`` (the key
    cannot be read) or a ``HostProblem.kind``; ``data`` holds facts for JSON (version, state)."""

    level: Level
    detail: str
    fix: str = ""
    problem: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def config_problem(self) -> bool:
        """True when the fix is in the config or the key (waiting for the host will not help)."""
        return self.problem in CONFIG_PROBLEMS

    def line(self) -> str:
        """The verdict in one line: ``detail`` and, when something is wrong, ``fix: ...``."""
        return f"{self.detail}; fix: {self.fix}" if self.fix else self.detail


def _failed(problem: HostProblem, data: dict[str, Any]) -> PrinterCheck:
    return PrinterCheck("FAIL", problem.detail, problem.fix, problem.kind, data)


def check_printer(settings: PrinterSettings, timeout_s: float) -> PrinterCheck:
    """Reach the printer host of ``settings`` (each request waits at most ``timeout_s``)."""
    if settings.kind == "none":
        return PrinterCheck("SKIP", "printer.kind is none (alerts watch the camera without a printer)")
    try:
        api_key = resolve_api_key(settings)
    except ConfigError as exc:
        return PrinterCheck("FAIL", str(exc), problem="config", data={"url": settings.url})
    client = http_client(settings.model_copy(update={"timeout_s": timeout_s}), api_key)
    data: dict[str, Any] = {
        "kind": settings.kind,
        "url": client.http.base_url,
        "api_key": api_key is not None,
    }
    if isinstance(client, OctoPrintClient):
        return _check_octoprint(client, data)
    assert isinstance(client, MoonrakerClient)
    return _check_moonraker(client, data)


def _job_state(client: HttpPrinterClient, data: dict[str, Any]) -> PrinterCheck | None:
    """Read the job state into ``data``; a failed check when it cannot be read."""
    try:
        state = client.parse_state(client.http.request("GET", client.STATE_PATH), 0.0)
    except HttpError as exc:
        return _failed(client.explain(exc), data)
    except ValueError as exc:
        return _failed(HostProblem("wrong_url", f"{client.http.base_url}: {exc}", client.URL_FIX), data)
    data.update(state=state.raw_state, status=str(state.status), job=state.job_name)
    return None


def _identify(client: HttpPrinterClient, path: str, key: str, data: dict[str, Any]) -> Any:
    """``GET path`` and the part of the answer under ``key`` that says which host answers; a failed
    ``PrinterCheck`` when the request fails or the answer has no such part."""
    try:
        answer = client.http.request("GET", path)
    except HttpError as exc:
        return _failed(client.explain(exc), data)
    found = answer.get(key) if isinstance(answer, dict) else None
    if found is None:
        where = f"{client.http.base_url} answers, but not like {client.name}"
        return _failed(HostProblem("wrong_url", where, client.URL_FIX), data)
    return found


def _check_octoprint(client: OctoPrintClient, data: dict[str, Any]) -> PrinterCheck:
    server = _identify(client, client.VERSION_PATH, "server", data)
    if isinstance(server, PrinterCheck):
        return server
    data["version"] = server
    failed = _job_state(client, data)
    if failed is not None:
        return failed
    where = f"OctoPrint {server} at {client.http.base_url} accepts the API key"
    if data["state"].startswith("Offline"):
        return PrinterCheck(
            "WARN",
            f"{where}, but its printer is {data['state']}",
            "connect the printer in OctoPrint (Connection panel, or enable auto-connect)",
            data=data,
        )
    return PrinterCheck("OK", f"{where}; the printer is {data['state']}", data=data)


def _check_moonraker(client: MoonrakerClient, data: dict[str, Any]) -> PrinterCheck:
    result = _identify(client, client.INFO_PATH, "result", data)
    if isinstance(result, PrinterCheck):
        return result
    if not isinstance(result, dict):
        result = {}
    version = str(result.get("moonraker_version", "?"))
    klippy = str(result.get("klippy_state", "unknown"))
    data.update(version=version, klippy_state=klippy)
    where = f"Moonraker {version} at {client.http.base_url} answers"
    if klippy != "ready":
        return PrinterCheck(
            "WARN",
            f"{where}, but Klipper is {klippy!r}, not ready",
            "look at Klipper's state in Mainsail/Fluidd (FIRMWARE_RESTART), or wait for it to start",
            data=data,
        )
    failed = _job_state(client, data)
    if failed is not None:
        return failed
    return PrinterCheck("OK", f"{where}; Klipper is ready, the print is {data['state']}", data=data)
