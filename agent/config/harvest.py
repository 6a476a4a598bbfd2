"""The ``harvest`` section: which frames to keep for labelling, the disk they may use and how
long they stay (the policies themselves: agent.harvest)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import Field, model_validator

from agent.config.base import StrictModel

PolicyName = Literal["all", "detection", "uncertainty", "change", "interval", "duplicate", "class_balance"]


REASON_POLICIES: tuple[str, ...] = ("all", "detection", "uncertainty", "change")


VETO_POLICIES: tuple[str, ...] = ("interval", "duplicate", "class_balance")


def _check_band(where: str, low: float, high: float) -> None:
    if low > high:
        raise ValueError(f"{where}min_score {low} is above max_score {high}; swap them")


class DetectionPolicy(StrictModel):
    """Keep frames with a detection of one of ``labels`` (any label when empty) scored in range."""

    labels: list[str] = Field(default_factory=list)
    """Keep frames with these labels (empty: any label)."""
    min_score: float = Field(0.0, ge=0.0, le=1.0)
    """Lowest score that counts."""
    max_score: float = Field(1.0, ge=0.0, le=1.0)
    """Highest score that counts."""
    max_reported: int = Field(3, ge=1, le=100)
    """harvest.json names at most this many of a kept frame's matching detections (highest score first)."""

    @model_validator(mode="after")
    def _range(self) -> DetectionPolicy:
        _check_band("", self.min_score, self.max_score)
        return self


class UncertaintyPolicy(StrictModel):
    """Keep frames where the detector is unsure: any detection (not only the best one) scored
    within its class's band, ``[min_score, max_score]`` unless ``classes`` gives the class its own.

    A band's lower end should be at or above the detector's own score threshold
    (``detector.score_threshold`` or the model card's), or its lower part never sees a detection.
    """

    min_score: float = Field(0.3, ge=0.0, le=1.0)
    """Keep frames with a detection scored at least this (classes without a band of their own)."""
    max_score: float = Field(0.6, ge=0.0, le=1.0)
    """And at most this."""
    classes: dict[str, tuple[float, float]] = Field(default_factory=dict)
    """A band per class, e.g. {spaghetti: [0.2, 0.5]}: [min_score, max_score] for that label."""
    max_reported: int = Field(3, ge=1, le=100)
    """harvest.json names at most this many of a kept frame's unsure detections (lowest score first)."""

    @model_validator(mode="after")
    def _range(self) -> UncertaintyPolicy:
        _check_band("", self.min_score, self.max_score)
        for label, (low, high) in self.classes.items():
            if not (0.0 <= low <= 1.0 and 0.0 <= high <= 1.0):
                raise ValueError(f"classes.{label}: scores are between 0 and 1, got [{low}, {high}]")
            _check_band(f"classes.{label}: ", low, high)
        return self

    def band(self, label: str) -> tuple[float, float]:
        """The ``(min_score, max_score)`` band of ``label``."""
        return self.classes.get(label, (self.min_score, self.max_score))


class IntervalPolicy(StrictModel):
    """At most one kept frame per ``interval_s`` seconds per source."""

    interval_s: float = Field(10.0, gt=0.0)
    """Keep at most one frame per this many seconds per source."""


class DuplicatePolicy(StrictModel):
    """Drop a frame whose 64-bit dHash is within ``max_distance_bits`` of a recently kept one.

    With ``compare_labels`` the kept frame must also have had the same detected labels
    (and counts), so a small new object that barely changes the hash is still kept.
    """

    max_distance_bits: int = Field(6, ge=0, le=64)
    """Frames whose 64-bit hash differs by at most this many bits from a kept frame are duplicates."""
    window_frames: int = Field(200, ge=1, le=100_000, description="kept frames per source compared")
    compare_labels: bool = True
    """A duplicate must also have the same labels and counts."""


class ClassBalancePolicy(StrictModel):
    """Drop a frame when each of its labels already has this many kept frames in the last hour."""

    max_per_label_per_hour: int = Field(60, ge=1)
    """Stop keeping frames of a label after this many in an hour."""


def _default_policies() -> list[PolicyName]:
    return ["all"]


class HarvestSettings(StrictModel):
    """The ``harvest`` config section: keep policies, disk quota and retention."""

    policies: list[PolicyName] = Field(default_factory=_default_policies)
    """Keep policies: reasons all, detection, uncertainty, change; vetoes interval, duplicate, class_balance."""
    detection: DetectionPolicy = Field(default_factory=DetectionPolicy)
    uncertainty: UncertaintyPolicy = Field(default_factory=UncertaintyPolicy)
    interval: IntervalPolicy = Field(default_factory=IntervalPolicy)
    duplicate: DuplicatePolicy = Field(default_factory=DuplicatePolicy)
    class_balance: ClassBalancePolicy = Field(default_factory=ClassBalancePolicy)
    quota_mb: float = Field(1024.0, ge=0.0, description="kept frames + annotations; 0 means no quota")
    max_age_days: float = Field(0.0, ge=0.0, description="evict kept frames older than this; 0 keeps them")
    min_free_mb: float = Field(200.0, ge=0.0, description="stop keeping frames below this free space")
    report_frames: int = Field(100, ge=0, le=100_000)
    """harvest.json says why the newest this many kept frames still on disk were kept."""

    @model_validator(mode="after")
    def _policies_make_sense(self) -> HarvestSettings:
        repeated = sorted(name for name, n in Counter(self.policies).items() if n > 1)
        if repeated:
            raise ValueError(f"policies lists {', '.join(repeated)} more than once; list each policy once")
        others = [p for p in self.policies if p in REASON_POLICIES and p != "all"]
        if "all" in self.policies and others:
            raise ValueError(
                f"policies lists 'all' together with {', '.join(others)}: 'all' already keeps every "
                f"frame; list either 'all' or the reasons you want ({', '.join(REASON_POLICIES[1:])})"
            )
        return self

    @property
    def reason_policies(self) -> list[str]:
        """The listed reasons to keep a frame (``['all']`` when none is listed)."""
        return [p for p in self.policies if p in REASON_POLICIES] or ["all"]

    @property
    def veto_policies(self) -> list[str]:
        """The listed vetoes, in the order listed."""
        return [p for p in self.policies if p in VETO_POLICIES]
