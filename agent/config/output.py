"""The ``output`` section: where the agent keeps what it writes, and how the VoTT project is
named and mapped for the reviewer."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.config.base import StrictModel

# The name of the VoTT security token every project refers to (the reviewer adds it once in VoTT).
DEFAULT_SECURITY_TOKEN = "edge-agent Token"


class OutputSettings(StrictModel):
    """Where the agent keeps what it writes, and how the VoTT project is named and mapped."""

    dir: str = Field(
        default="edge-agent-data", description="frames, VoTT project, outbox and state live here"
    )
    project_name: str | None = Field(
        default=None, description="VoTT project name; default edge-agent-<source>"
    )
    reviewer_root: str | None = Field(
        default=None,
        description="`dir` as the reviewer's machine sees it, e.g. C:\\Users\\ann\\edge-agent-data",
    )
    jpeg_quality: int = Field(default=90, ge=10, le=100, description="for frames the source gave undecoded")
    save_every: int = Field(
        default=20, ge=0, le=100000, description="rewrite the .vott after this many frames"
    )
    save_interval_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="but at most this often (the whole file is rewritten; it is also saved on exit)",
    )
    max_unsaved_s: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="whatever save_every and save_interval_s say, a kept frame is listed in the .vott "
        "within this many seconds (what VoTT, or a crash, sees of a running agent)",
    )
    link_source_frames: bool = Field(
        default=False,
        description="a kept frame from an image folder becomes a hard link to its file instead of a "
        "copy (one write less a frame, on the same file system only); the two are then one file: only "
        "for folders whose images nothing edits in place (a timelapse that writes new files)",
    )
    fsync: bool = Field(default=True, description="flush written files to the device (SD cards lose less)")
    fsync_interval_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="flush kept frames and asset files together at most this often (a power cut loses "
        "at most this much); 0: fsync each file as it is written",
    )

    def data_dir(self) -> Path:
        """The output folder as an absolute path."""
        return Path(self.dir).expanduser().resolve()

    def frames_dir(self) -> Path:
        """The folder holding kept frames (VoTT's source connection)."""
        return self.data_dir() / "frames"

    def vott_dir(self) -> Path:
        """The VoTT target folder (.vott file and asset files)."""
        return self.data_dir() / "vott"
