"""The ``pipeline`` section: queues, stats, stopping, and when a stuck stage counts as hung."""

from __future__ import annotations

from pydantic import Field

from agent.config.base import StrictModel


class PipelineSettings(StrictModel):
    """Queues, logging of stats, and when to stop."""

    capture_queue: int = Field(default=4, ge=1, le=1000, description="frames waiting for the detector")
    result_queue: int = Field(
        default=4,
        ge=1,
        le=10000,
        description="results waiting for the output stages (each holds a decoded frame)",
    )
    stats_interval_s: float = Field(
        default=30.0, gt=0, le=86400, description="log and publish stats this often"
    )
    max_frames: int = Field(default=0, ge=0, description="stop after this many frames; 0 = never")
    max_consecutive_errors: int = Field(
        default=20, ge=1, le=100000, description="detector failures in a row before the agent gives up"
    )
    inference_timeout_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="an inference this long is hung: restart the detector (0: never)",
    )
    max_detector_restarts: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="hung-detector restarts before the agent exits (systemd restarts it)",
    )
    stall_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a frame stuck this long in a stage stops the systemd watchdog",
    )
