"""The ``alerts.scene`` section: does the camera still see the print it watches (see agent.alerts.scene)."""

from __future__ import annotations

from pydantic import Field, model_validator

from agent.config.base import StrictModel


class SceneSettings(StrictModel):
    """``alerts.scene``: a failure counts only while the camera still sees the print scene it learnt
    when the print started. Frames where the view changed (camera moved, something right in front of
    the lens) or the print is hidden (a hand, a person, a pet) are left out of the smoothing and, after
    ``event_after_samples`` of them, reported as a ``view_changed`` or ``obstructed`` event."""

    enabled: bool = True
    """Check every sampled frame against the learnt scene. Off: every frame counts, as in Obico."""
    context_labels: list[str] = Field(default_factory=lambda: ["nozzle", "print", "raft"])
    """The model's labels for the printer's own parts, that show where the print is (labels the
    model does not have are ignored)."""
    filament_labels: list[str] = Field(default_factory=lambda: ["print", "raft"])
    """The labels whose boxes show the filament: a change in a still part of the picture that has the
    filament's colour (a part knocked off, spaghetti) is a failure to judge, not something in the way."""
    context_min_score: float = Field(0.3, ge=0, le=1)
    """A context detection counts from this confidence."""
    width_px: int = Field(80, ge=16, le=640)
    """Width of the grey picture the scene is compared in (height in proportion)."""
    pixel_threshold: int = Field(25, ge=1, le=254)
    """A pixel differs from the learnt scene when its grey level is this much away from it."""
    learn_samples: int = Field(3, ge=1, le=100)
    """Samples at the start of a print (and after a resume) that form the scene before it is judged."""
    view_changed_share: float = Field(0.5, gt=0, le=1)
    """``view_changed`` when this share of the picture differs from the learnt scene."""
    obstructed_share: float = Field(0.025, gt=0, le=1)
    """``obstructed`` when this share of the picture changed where the scene is normally still (not
    where the head, the bed and the print move)."""
    hidden_share: float = Field(0.45, gt=0, le=1)
    """``obstructed`` too when this share of the print's area changed and the model no longer sees
    the printer's parts where they were."""
    zone_margin: float = Field(0.5, ge=0, le=5)
    """Failure detections count only near the print: with half their area or more in the area where
    the model saw the printer's parts, widened by this fraction of its larger side on every side (and
    at least 15 % of the frame)."""
    relearn_after_samples: int = Field(60, ge=2, le=100000)
    """A view that stays changed this many samples in a row, with the model seeing the printer's parts
    in it, is learnt as the print's new scene (a camera moved on purpose; 60 = 10 min at 10 s).
    Pausing and resuming the print, or a new print, learns the scene again at once."""
    event_after_samples: int = Field(3, ge=1, le=1000)
    """A ``view_changed`` / ``obstructed`` event is sent after this many such samples in a row (one
    per stretch; ``view_restored`` when the view is back)."""

    @model_validator(mode="after")
    def _check(self) -> SceneSettings:
        if self.obstructed_share >= self.view_changed_share:
            raise ValueError(
                f"obstructed_share ({self.obstructed_share}) must be below view_changed_share "
                f"({self.view_changed_share})"
            )
        return self
