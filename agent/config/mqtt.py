"""The ``mqtt`` config section: broker, identity, TLS, payload sizes, outbox bounds, Home Assistant.

Secrets never live in the YAML: the password comes from an environment variable
(``password_env``) or a file (``password_file``) and is read only when connecting.
Every default works without a broker: messages wait in the on-disk outbox, bounded by
``outbox.max_mb`` and ``outbox.max_age_h``.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from agent.config.base import StrictModel
from agent.errors import ConfigError
from agent.naming import safe_name


def default_device_id() -> str:
    """The host name, made safe for a topic level.

    The configuration reference prints this docstring's first sentence as the default.
    """
    return safe_name(socket.gethostname() or "edge-agent", max_len=64)


class OutboxSettings(StrictModel):
    """Where unacknowledged messages wait on disk, and how much of them to keep."""

    path: str = Field("mqtt-outbox.sqlite3", description="SQLite file; a relative path is in output.dir")
    max_mb: float = Field(256.0, gt=0, description="payload bytes kept before dropping, frames first")
    max_age_h: float = Field(168.0, gt=0, description="messages older than this are dropped (all classes)")
    inflight_max: int = Field(
        16, ge=1, le=1000, description="messages sent but not yet acknowledged; keep <= broker max_inflight"
    )


class HomeAssistantSettings(StrictModel):
    """Home Assistant MQTT discovery (a device with failure, score, fps, latency and image entities)."""

    enabled: bool = False
    """Publish Home Assistant MQTT discovery."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's discovery prefix."""
    name: str = Field("", description="device name shown in Home Assistant; empty: 'edge-agent <device_id>'")

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix_is_topic(cls, value: str) -> str:
        return check_topic_prefix(value, "home_assistant.discovery_prefix")


class BrokerConnection(StrictModel):
    """How to reach the broker: address, MQTT version, timeouts, TLS and credentials.

    The keys shared by the agent's ``mqtt`` section and the review receiver's; error messages
    name them ``mqtt.<key>``, as both files call the section ``mqtt``.
    """

    host: str = Field("localhost", min_length=1)
    """Broker host name or address."""
    port: int | None = Field(None, ge=1, le=65535, description="default 8883 with TLS, else 1883")
    protocol: Literal["5", "3.1.1"] = "5"
    """MQTT version: 5 or 3.1.1."""
    keepalive_s: int = Field(30, ge=5, le=65535)
    """MQTT keepalive."""
    connect_timeout_s: float = Field(10.0, gt=0, le=300)
    """Give up on one connection attempt after this long."""
    reconnect_min_s: float = Field(1.0, gt=0, le=3600)
    """First reconnect delay (doubles up to reconnect_max_s)."""
    reconnect_max_s: float = Field(60.0, gt=0, le=3600)
    """Longest reconnect delay."""

    tls: bool = Field(False, description="TLS on; implied by ca_file or cert_file")
    ca_file: str | None = Field(None, description="CA bundle that signed the broker's certificate")
    cert_file: str | None = Field(None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(None, description="client private key (mutual TLS)")
    insecure_skip_verify: bool = Field(False, description="do not verify the broker (testing only)")

    username: str | None = None
    """MQTT user name."""
    password_env: str | None = Field(None, description="environment variable holding the password")
    password_file: str | None = Field(None, description="file whose first line is the password")

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as an int and `protocol: 3.1.1` as text.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return f"{value:g}"
        return value

    @model_validator(mode="after")
    def _consistent_connection(self) -> Self:
        if self.password_env and self.password_file:
            raise ValueError("set only one of password_env and password_file")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file (the client certificate it belongs to)")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    @property
    def use_tls(self) -> bool:
        """True when the connection is encrypted."""
        return bool(self.tls or self.ca_file or self.cert_file)

    @property
    def effective_port(self) -> int:
        """The configured port, or the MQTT default for the transport (8883 TLS, 1883 plain)."""
        if self.port is not None:
            return self.port
        return 8883 if self.use_tls else 1883

    def read_password(self) -> str | None:
        """The password from ``password_env`` or ``password_file``; None when neither is set.

        Raises ``ConfigError`` when the variable is unset or the file unreadable. The value is
        never logged.
        """
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"mqtt.password_env names the environment variable {self.password_env!r}, which is "
                    f"not set; export it (e.g. in the systemd unit's EnvironmentFile) or unset password_env"
                )
            return value
        if self.password_file:
            path = Path(self.password_file).expanduser()
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(
                    f"mqtt.password_file {str(path)!r} cannot be read ({exc.strerror}); create it with the "
                    f"password on its first line, readable by the agent's user only (chmod 600)"
                ) from None
            return lines[0] if lines else ""
        return None


class MqttSettings(BrokerConnection):
    """Connection to the MQTT broker and what is published there (see agent/mqtt/topics.py)."""

    enabled: bool = False
    """Publish over MQTT (messages wait in the outbox while no broker answers)."""
    client_id: str = Field("", description="empty: 'edge-agent-<device_id>'")
    device_id: str = Field(default_factory=default_device_id)
    """This agent's id in topics (with an ACL, equal to the MQTT user)."""
    topic_prefix: str = "edge-agent"
    """First topic level."""
    close_timeout_s: float = Field(5.0, ge=0, le=300, description="wait for in-flight acks on exit")

    frame_jpeg_quality: int = Field(85, ge=1, le=100, description="used only when a frame is re-encoded")
    frame_max_width_px: int = Field(1920, ge=0, description="wider frames are resized; 0: never resize")
    frame_expiry_s: int = Field(86400, ge=0, description="MQTT 5 message expiry on frames; 0: none")

    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    home_assistant: HomeAssistantSettings = Field(default_factory=HomeAssistantSettings)

    @field_validator("device_id")
    @classmethod
    def _device_id_is_topic_level(cls, value: str) -> str:
        if not value or safe_name(value, max_len=64) != value:
            raise ValueError(
                f"device_id {value!r} must be 1-64 characters from A-Z a-z 0-9 . _ -, not starting with . or - "
                f"(it is a topic level and, with an ACL, the MQTT user name); "
                f"for example {safe_name(value or 'edge-agent', max_len=64)!r}"
            )
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_topic(cls, value: str) -> str:
        return check_topic_prefix(value, "topic_prefix")

    @property
    def effective_client_id(self) -> str:
        """The configured client id, or ``edge-agent-<device_id>``."""
        return self.client_id or f"edge-agent-{self.device_id}"


def check_topic_prefix(value: str, key: str) -> str:
    """``value`` when it can prefix topics (non-empty, no wildcards, no leading or trailing '/');
    else ``ValueError`` naming ``key``."""
    if not value or value.startswith("/") or value.endswith("/") or any(c in value for c in "+#\0"):
        raise ValueError(
            f"{key} {value!r} must be a non-empty topic without wildcards (+ #) or leading/trailing '/'"
        )
    return value
