"""The ``alerts`` section: the print-failure score and when to warn and act (see agent.alerts)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel
from agent.config.scene import SceneSettings


class AlertSettings(StrictModel):
    """``alerts:`` section. Defaults are Obico's learned values where Obico has one."""

    enabled: bool = False
    """Watch for print failures (the printer use); off for agents that only harvest frames."""
    failure_labels: dict[str, float] = Field(default_factory=lambda: {"spaghetti": 1.0, "adhesion": 0.5})
    """Label -> weight of its confidence in the frame score. Ours: the print3d model's failure
    labels; Obico's model has one 'failure' label with weight 1."""
    min_detection_score: float = Field(0.08, ge=0, le=1)
    """Detections below this confidence are ignored. Obico ml_api ``THRESH = 0.08``. The
    detector's own threshold applies first, so keep it this low for failure labels."""
    aggregate: Literal["sum", "max"] = "sum"
    """How a frame's weighted confidences combine. Obico ``sum_p_in_detections``: sum."""
    area_of_interest: tuple[float, float, float, float] | None = None
    """Normalised ``x1, y1, x2, y2`` of the bed; detections centred outside are ignored. Ours."""
    threshold: float = Field(0.38, gt=0)
    """Lowest warn level of the smoothed signal. Obico ``THRESHOLD_LOW = 0.38``."""
    threshold_high: float = Field(0.78, gt=0)
    """Highest warn level, however noisy the print. Obico ``THRESHOLD_HIGH = 0.78``."""
    short_mean_multiple: float = Field(3.8, ge=0)
    """The level rises to this many times the print's short-mean excess over the long mean.
    Obico ``ROLLING_MEAN_SHORT_MULTIPLE = 3.8``."""
    warn_multiplier: float = Field(1.0, gt=0)
    """``warn`` fires above this multiple of the level. Obico: ``is_failing(escalating_factor=1)``."""
    act_multiplier: float = Field(1.75, gt=0)
    """``act`` fires above this multiple of the level. Obico ``ESCALATING_FACTOR = 1.75``."""
    clear_ratio: float = Field(0.8, gt=0, le=1)
    """An alert clears when the signal falls below this fraction of its level. Ours (hysteresis)."""
    ewm_span: int = Field(12, ge=1)
    """Span of the exponentially weighted mean, in samples (alpha = 2/(span+1)). Obico: 12."""
    short_window_samples: int = Field(310, ge=1)
    """Short rolling mean window, in samples, reset per print. Obico ``ROLLING_WIN_SHORT = 310``."""
    freeze_short_mean_while_alerting: bool = True
    """Keep the short mean still while the level is warn or act, so a failure does not raise its
    own bar before it can escalate to act. Ours; Obico keeps updating it (``False``)."""
    long_window_samples: int = Field(7200, ge=1)
    """Long rolling mean window, in samples, kept across prints. Obico ``ROLLING_WIN_LONG = 7200``."""
    long_mean_prior_samples: int = Field(360, ge=0)
    """A fresh long mean counts as this many clean samples already seen (360 = 1 h at 10 s). Ours:
    Obico starts from no history, so on a new install a failure visible from the first frames
    becomes the 'normal' level and never alerts."""
    min_sample_interval_s: float = Field(8.0, ge=0)
    """Frames closer than this to the last sample are not counted: the parameters above assume
    one sample per 10 s. Obico ``MIN_DETECTION_INTERVAL = 10``; 8 here so a 10 s sampler's
    jitter never halves the rate."""
    startup_grace_samples: int = Field(30, ge=0)
    """No alerts in a print's first samples (30 = 5 min at 10 s). Obico ``INIT_SAFE_FRAME_NUM = 30``."""
    resume_grace_samples: int = Field(6, ge=1)
    """Samples after a resume without alerts, whose mean score becomes the print's new zero. Ours."""
    cooldown_s: float = Field(90.0, ge=0)
    """Least time between alerts (an escalation from warn to act is never delayed).
    Obico ``ALERT_COOLDOWN_SECONDS = 90``."""
    max_alerts_per_print: int = Field(6, ge=1)
    """At most this many warn + act alerts per print (3 episodes); later ones are only logged. Ours."""
    action: Literal["none", "pause"] = "none"
    """What ``act`` does: ``pause`` asks the printer host to pause. Obico's ``action_on_failure``."""
    history_samples: int = Field(60, ge=1, le=2000)
    """How many recent samples (score, smoothed) an alert carries (60 = 10 min at 10 s). Ours."""
    state_file: Path | None = None
    """Where the monitor's state is saved, to survive restarts; unset: ``alert-state.json`` in
    ``output.dir`` (``replay`` neither reads nor saves it)."""
    state_save_interval_s: float = Field(30.0, ge=0, le=3600)
    """Save new samples to ``state_file`` at most this often (events and print changes are saved
    at once, and the last samples on a clean exit); 0 saves every sample. Ours."""
    scene: SceneSettings = Field(default_factory=SceneSettings)
    """The scene check: a failure counts only while the camera still sees the print (see below)."""

    @field_validator("failure_labels")
    @classmethod
    def _check_labels(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("name at least one failure label, e.g. {spaghetti: 1.0}")
        bad = [name for name, weight in value.items() if not (math.isfinite(weight) and weight >= 0)]
        if bad:
            raise ValueError(f"failure label weights must be >= 0 (fix {', '.join(bad)})")
        return value

    @field_validator("area_of_interest")
    @classmethod
    def _check_aoi(
        cls, value: tuple[float, float, float, float] | None
    ) -> tuple[float, float, float, float] | None:
        if value is not None:
            x1, y1, x2, y2 = value
            if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
                raise ValueError(
                    f"area_of_interest {list(value)} must be normalised [x1, y1, x2, y2] with "
                    "0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1, e.g. [0.1, 0.2, 0.9, 1.0]"
                )
        return value

    @model_validator(mode="after")
    def _check_levels(self) -> AlertSettings:
        if self.threshold_high < self.threshold:
            raise ValueError(
                f"threshold_high ({self.threshold_high}) must be >= threshold ({self.threshold})"
            )
        if self.act_multiplier < self.warn_multiplier:
            raise ValueError(
                f"act_multiplier ({self.act_multiplier}) must be >= warn_multiplier ({self.warn_multiplier})"
            )
        return self
