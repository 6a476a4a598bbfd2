"""From the ``printer`` config section to a client: the API key, the webcam URLs, the right host."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from agent.config.printer import PrinterSettings
from agent.errors import ConfigError
from agent.printer.client import HttpPrinterClient, NoPrinter, PrinterClient
from agent.printer.moonraker import MoonrakerClient
from agent.printer.octoprint import OctoPrintClient


@dataclass(frozen=True, slots=True)
class WebcamUrls:
    """The MJPEG stream and single-JPEG snapshot URLs of the printer's webcam."""

    stream: str
    snapshot: str


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


def http_client(
    settings: PrinterSettings, api_key: str | None, *, clock: Callable[[], float] = time.time
) -> HttpPrinterClient:
    """The HTTP client for an ``octoprint`` or ``moonraker`` host (``ValueError`` for ``none``)."""
    if settings.kind == "octoprint":
        return OctoPrintClient(settings, api_key, clock=clock)
    if settings.kind == "moonraker":
        return MoonrakerClient(settings, api_key, clock=clock)
    raise ValueError(f"printer.kind {settings.kind!r} has no HTTP client")


def make_printer(settings: PrinterSettings, *, clock: Callable[[], float] = time.time) -> PrinterClient:
    """The client for ``settings.kind``, with its API key resolved (``ConfigError`` if missing)."""
    if settings.kind == "none":
        return NoPrinter(clock=clock)
    return http_client(settings, resolve_api_key(settings), clock=clock)
