"""The ``printer`` section: which printer host (OctoPrint, Moonraker) to ask about the job."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from agent.config.base import StrictModel


class PrinterSettings(StrictModel):
    """``printer:`` section: which printer host to ask about the job, and how."""

    kind: Literal["none", "octoprint", "moonraker"] = "none"
    """``none`` (no printer integration: alerts treat the camera as always watching one long
    print), ``octoprint`` or ``moonraker``."""
    url: str = ""
    """Base URL of the host's API, e.g. ``http://octopi.local`` (OctoPrint) or
    ``http://mainsailos.local:7125`` (Moonraker)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the API key (OctoPrint: Settings > Application
    Keys; Moonraker only when its authorization is on). Never put the key itself in YAML."""
    api_key_file: Path | None = None
    """File holding the API key (first line), as an alternative to ``api_key_env``."""
    poll_interval_s: float = Field(5.0, gt=0, le=3600)
    """Seconds between job-state polls while the host answers (doubles up to 60 s while it does not).
    The polls run on a thread of their own: a host that hangs never holds up the frames."""
    timeout_s: float = Field(5.0, gt=0, le=120)
    """Seconds to wait for one HTTP request."""
    retry_delay_s: float = Field(2.0, ge=0, le=60)
    """Seconds before a failed pause request is sent again; the wait doubles after each failure, up to
    ``retry_max_delay_s``. A pause is retried until the printer reports paused or the print ends."""
    retry_max_delay_s: float = Field(60.0, ge=0, le=3600)
    """Longest wait between two pause requests while the host keeps failing."""
    pause_confirm_s: float = Field(30.0, gt=0, le=600)
    """After the host accepted a pause, seconds to wait for it to report paused (or pausing) before
    the pause is asked for again (a Klipper PAUSE macro may take a while to park the head)."""
    webcam_base_url: str | None = None
    """Where ``/webcam/`` is served when not at ``url``'s host (default: OctoPrint's ``url``;
    for Moonraker the same host on the web UI's port 80, where crowsnest is proxied)."""

    @model_validator(mode="after")
    def _check(self) -> PrinterSettings:
        if self.kind != "none" and not self.url.startswith(("http://", "https://")):
            raise ValueError(
                f"printer.kind is {self.kind!r} but printer.url is {self.url!r}: set it to the host's "
                "address, e.g. http://octopi.local (OctoPrint) or http://printer.local:7125 (Moonraker)"
            )
        if self.api_key_env and self.api_key_file:
            raise ValueError("set only one of printer.api_key_env and printer.api_key_file")
        return self
