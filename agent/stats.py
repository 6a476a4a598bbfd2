"""The shape of the figures the agent reports: the periodic log line, the retained ``stats`` MQTT
message (``docs/schema/stats.schema.json``) and ``run``'s final summary.

Each component types its own part (``agent.harvest.summary.HarvestStats``, the outbox's and the
publisher's counters below); ``PipelineStats`` puts them together under each output stage's name.
"""

from typing import Any, NotRequired, TypedDict


class FrameCounts(TypedDict):
    """Frames since start: read from the source, dropped (a live source's oldest, a hung detector's),
    skipped by the change gate, through the output stages, kept for labelling, and detector trouble."""

    captured: int
    dropped: int
    skipped: int
    processed: int
    kept: int
    detector_errors: int
    detector_restarts: int


class QueueDepths(TypedDict):
    """Frames waiting for a detector, results waiting for the output stages."""

    capture: int
    results: int


class DetectorInfo(TypedDict):
    """What runs where: the model, the runtime, the Edge TPU device and why a fallback runs."""

    model: str
    runtime: str
    edgetpu: str | None
    fallback: str | None


class SourceCounts(TypedDict):
    """A source's counters (``agent.sources.base.FrameSource``)."""

    frames: int
    corrupt_skipped: int
    reconnects: int
    errors: int
    dropped: int


class OutboxStats(TypedDict):
    """The MQTT outbox: messages and bytes waiting, per class, in flight, stored since start, dropped
    (reason -> class -> count) and the age of the oldest message in seconds."""

    messages: int
    bytes: int
    by_class: dict[str, int]
    inflight: int
    stored: int
    dropped: dict[str, dict[str, int]]
    dropped_total: int
    oldest_age_s: float | None


class MqttStats(TypedDict):
    """The publisher: the link, its last problem, messages sent, acknowledged, refused by the
    broker, connections, messages the outbox could not store, and the outbox."""

    connected: bool
    last_error: str | None
    sent: int
    acked: int
    refused: int
    connects: int
    store_failed: int
    outbox: OutboxStats | dict[str, Any]


class PipelineStats(TypedDict):
    """The pipeline's figures now; each output stage's own under its name (``alerts``, ``harvest``,
    ``vott``, ``quota``, ``mqtt``, ``resume``) when it runs."""

    uptime_s: float
    fps: float
    inference_ms: float | None
    frames: FrameCounts
    queues: QueueDepths
    stage_errors: dict[str, int]
    detector: NotRequired[DetectorInfo]
    source: SourceCounts | dict[str, int]
