"""The review receiver's config file (``edge-agent review --config review.yaml``).

Top-level keys: ``mqtt`` (broker connection, topic prefix, shared group), ``root`` and
``reviewer_root`` (where projects are written and where the reviewer sees them), batching
(``batch_by``, ``batch_size``, ``close_grace_s``), caps on untrusted input (``max_jpeg_mb``,
``max_annotation_kb``, ``max_image_px``, ``max_image_mpx``, ``max_devices``, ``max_regions``,
``max_label_chars``, ``min_free_mb``), memory (``queue_max_messages``, ``queue_max_mb``), a flooding
device's spool on disk (``spool_max_mb``), locks
on a shared root (``lock_lease_s``, ``lock_wait_s``), ``security_token``, ``fsync`` and
``stats_interval_s``. Every key has a
default that works against a broker on localhost.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel
from agent.config.mqtt import BrokerConnection, check_topic_prefix
from agent.config.output import DEFAULT_SECURITY_TOKEN
from agent.naming import safe_name


def default_client_id() -> str:
    """``edge-agent-review-<host name>``: fixed per machine, so the broker keeps the session."""
    return "edge-agent-review-" + safe_name(socket.gethostname() or "host", max_len=64)


class ReviewMqttSettings(BrokerConnection):
    """Connection to the broker the agents publish to (the same keys as the agent's ``mqtt``
    section where they mean the same thing) and what to subscribe to."""

    client_id: str = Field(
        default_factory=default_client_id,
        min_length=1,
        max_length=128,
        description="fixed, so the broker keeps our session (and queues messages) while we are down; "
        "every receiver needs its own",
    )
    topic_prefix: str = Field("edge-agent", description="the agents' mqtt.topic_prefix")
    shared_group: str | None = Field(
        None,
        description="subscribe as $share/<group>/... so several receivers split the messages; they must "
        "all use the same root",
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600, ge=0, le=4294967295, description="MQTT 5: how long the broker keeps our session"
    )
    inflight_max: int = Field(
        64,
        ge=1,
        le=65535,
        description="MQTT 5 receive maximum: messages sent to us but not yet acknowledged (a hint: "
        "memory is bounded by queue_max_messages and queue_max_mb whatever the broker sends)",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic(cls, value: str) -> str:
        return check_topic_prefix(value, "topic_prefix")

    @field_validator("shared_group")
    @classmethod
    def _group_is_level(cls, value: str | None) -> str | None:
        if value is not None and (not value or safe_name(value, max_len=64) != value):
            raise ValueError(
                f"shared_group {value!r} must be 1-64 characters from A-Z a-z 0-9 . _ - (one topic level)"
            )
        return value

    @field_validator("client_id")
    @classmethod
    def _client_id_printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("client_id must be printable text")
        return value

    @model_validator(mode="after")
    def _shared_group_needs_v5(self) -> ReviewMqttSettings:
        if self.shared_group and self.protocol != "5":
            raise ValueError("shared_group needs protocol '5' (shared subscriptions are an MQTT 5 feature)")
        return self

    def topic_filters(self) -> list[str]:
        """The two subscriptions: frames and annotations of every device under the prefix."""
        share = f"$share/{self.shared_group}/" if self.shared_group else ""
        return [f"{share}{self.topic_prefix}/+/frames/+", f"{share}{self.topic_prefix}/+/annotations/+"]


class ReviewSettings(StrictModel):
    """The whole review receiver: broker, where projects go, batching and input caps."""

    mqtt: ReviewMqttSettings = Field(default_factory=ReviewMqttSettings)
    root: str = Field("edge-agent-review", description="folder where the projects are written")
    reviewer_root: str | None = Field(
        None,
        description="`root` as the reviewer's VoTT sees it (e.g. a Samba share: Z:\\review); default: root",
    )
    security_token: str = Field(
        DEFAULT_SECURITY_TOKEN,
        min_length=1,
        max_length=128,
        description="name of the VoTT security token every project refers to (added once in VoTT)",
    )

    batch_by: Literal["day", "count", "manual"] = Field(
        "day", description="day: one batch per UTC day; count: batch_size frames; manual: until closed"
    )
    batch_size: int = Field(500, ge=1, le=1_000_000, description="frames per batch with batch_by: count")
    close_grace_s: float = Field(
        300.0,
        ge=0,
        le=7 * 86400,
        description="after a batch stops taking new frames, how long its frames' missing parts may take",
    )

    max_jpeg_mb: float = Field(8.0, gt=0, le=256, description="larger frame messages are dropped")
    max_annotation_kb: float = Field(256.0, gt=0, le=65536, description="larger annotations are dropped")
    max_image_px: int = Field(8192, ge=16, le=65535, description="frames wider or taller are dropped")
    max_devices: int = Field(100, ge=1, le=100_000, description="messages from further devices are dropped")
    max_regions: int = Field(1000, ge=1, le=100_000, description="regions per annotation")
    max_label_chars: int = Field(100, ge=1, le=1000, description="characters per label")
    min_free_mb: float = Field(500.0, ge=0, description="drop messages when the disk has less free space")

    max_image_mpx: float = Field(
        8.0, gt=0, le=1000, description="frames of more megapixels are dropped (bounds decoding memory)"
    )

    queue_max_messages: int = Field(
        256, ge=1, le=100_000, description="messages read but not yet stored; when full, reading pauses"
    )
    queue_max_mb: float = Field(
        16.0,
        gt=0,
        le=4096,
        description="bytes of messages read but not yet stored; when full, reading pauses",
    )
    spool_max_mb: float = Field(
        1024.0,
        ge=0,
        le=1_048_576,
        description="disk under root/.edge-agent-review/spool for a device sending faster than it is "
        "stored while the queue is full, so others are not held up behind it; 0: no spool",
    )
    lock_lease_s: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="a lock file unchanged this long (its holder died or hangs) is broken by another receiver",
    )
    lock_wait_s: float = Field(
        20.0, gt=0, le=3600, description="how long a message waits for its device's lock before it is retried"
    )
    workers: int = Field(
        4,
        ge=1,
        le=64,
        description="threads storing messages (each on other devices): overlap fsync and decoding",
    )

    fsync: bool = Field(True, description="flush every file to the device before acknowledging")
    stats_interval_s: float = Field(60.0, gt=0, le=86400, description="log and write stats this often")

    @model_validator(mode="after")
    def _spool_holds_a_frame(self) -> ReviewSettings:
        if 0 < self.spool_max_mb < 2 * self.max_jpeg_mb:
            raise ValueError(
                f"spool_max_mb ({self.spool_max_mb:g}) must be 0 (no spool) or at least twice max_jpeg_mb "
                f"({self.max_jpeg_mb:g}): the spool must hold the largest frame a device may send"
            )
        return self

    @field_validator("security_token")
    @classmethod
    def _token_printable(cls, value: str) -> str:
        if not value.isprintable() or value.strip() != value:
            raise ValueError("security_token must be printable text without leading or trailing spaces")
        return value

    def root_path(self) -> Path:
        """``root`` as an absolute path (not yet resolved through symlinks)."""
        return Path(os.path.abspath(Path(self.root).expanduser()))

    @property
    def max_jpeg_bytes(self) -> int:
        """``max_jpeg_mb`` in bytes."""
        return int(self.max_jpeg_mb * 1024 * 1024)

    @property
    def queue_max_bytes(self) -> int:
        """``queue_max_mb`` in bytes."""
        return int(self.queue_max_mb * 1024 * 1024)

    @property
    def spool_max_bytes(self) -> int:
        """``spool_max_mb`` in bytes."""
        return int(self.spool_max_mb * 1024 * 1024)

    @property
    def max_annotation_bytes(self) -> int:
        """``max_annotation_kb`` in bytes."""
        return int(self.max_annotation_kb * 1024)
