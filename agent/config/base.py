"""Base class for typed configuration sections.

Every section of the YAML config is a pydantic model derived from ``StrictModel``:
unknown keys are refused, values are not silently coerced across types, and every
field has a default that works. ``agent.config`` turns validation errors into messages
that name the key path and the YAML line.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are errors; assignments are validated too."""

    model_config = ConfigDict(
        extra="forbid", strict=False, validate_assignment=True, frozen=False, use_attribute_docstrings=True
    )
