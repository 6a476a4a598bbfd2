"""The agent's configuration: one typed, validated model per YAML section.

Each section lives in its own module (``source``, ``detector``, ``output``, ``pipeline``, ``gate``,
``harvest``, ``alerts``, ``printer``, ``mqtt``; the review receiver's file in ``review``), imports
only pydantic and the standard library, and gives every key a default that works.
``load_config(path)`` reads a YAML file into an ``AgentConfig``; errors name the key path and
the line (``agent.config.loading``).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from agent.config.alerts import AlertSettings
from agent.config.base import StrictModel
from agent.config.detector import DetectorSettings
from agent.config.gate import GateSettings
from agent.config.harvest import HarvestSettings
from agent.config.loading import DEFAULT_CONFIG, expand_bundled, load_yaml_model
from agent.config.mqtt import MqttSettings
from agent.config.output import OutputSettings
from agent.config.pipeline import PipelineSettings
from agent.config.printer import PrinterSettings
from agent.config.source import SourceSettings


class AgentConfig(StrictModel):
    """The whole agent: one source, one detector, and what happens to the results."""

    source: SourceSettings = Field(default_factory=SourceSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    output: OutputSettings = Field(default_factory=OutputSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    harvest: HarvestSettings = Field(default_factory=HarvestSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    printer: PrinterSettings = Field(default_factory=PrinterSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)


def load_config(path: str | Path | None = None) -> AgentConfig:
    """Load and validate an agent config; ``None`` loads the bundled default config."""
    return load_yaml_model(path if path is not None else DEFAULT_CONFIG, AgentConfig, expand=expand_bundled)
