"""The ``gate`` section: when to skip inference on a frame where nothing changed (see agent.gate)."""

from __future__ import annotations

from pydantic import Field, field_validator

from agent.config.base import StrictModel


class GateSettings(StrictModel):
    """The ``gate`` config section: when to skip inference on an unchanged frame."""

    enabled: bool = False
    """Run the change gate: skip inference on frames where nothing changed."""
    downscale_width_px: int = Field(160, ge=16, le=1920, description="width of the compared picture")
    blur_kernel_px: int = Field(
        5, ge=0, le=31, description="Gaussian blur kernel (odd); 0 or 1 turns the blur off"
    )
    pixel_threshold: int = Field(
        25, ge=1, le=254, description="a pixel changed when it differs from the background by more"
    )
    min_changed_fraction: float = Field(
        0.002, gt=0.0, le=1.0, description="share of changed pixels that sends a frame to the detector"
    )
    background_alpha: float = Field(
        0.05, gt=0.0, le=1.0, description="weight of each new frame in the running-average background"
    )
    max_skip_interval_s: float = Field(
        10.0, gt=0.0, description="a static scene is still inferred at least this often"
    )
    warmup_frames: int = Field(10, ge=1, description="frames always inferred while the background forms")

    @field_validator("blur_kernel_px")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value > 1 and value % 2 == 0:
            raise ValueError(f"must be odd (or 0 for no blur), got {value}; try {value + 1}")
        return value
