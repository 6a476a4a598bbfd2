"""Secrets for cameras and webcams, read from environment variables or files, never from YAML.

A password or API key never appears in a log line, an error message or ``repr``.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.config.source import SourceSettings
from agent.errors import ConfigError


def read_secret(env_name: str | None, file_name: str | None, key: str) -> str | None:
    """The secret from environment variable ``env_name`` or file ``file_name`` (stripped), or
    None when neither is configured. ``key`` is the config key stem for messages
    (``"password"``, ``"api_key"``). Raises ``ConfigError`` when the variable or file is missing."""
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise ConfigError(
                f"source.{key}_env names the environment variable {env_name}, which is not set "
                f"or empty; export {env_name}=... (for systemd: an EnvironmentFile= line)"
            )
        return value
    if file_name:
        path = Path(file_name).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"source.{key}_file: cannot read {path}: {exc.strerror or exc}; create it "
                "(readable by the agent's user only, mode 600)"
            ) from None
        if not value:
            raise ConfigError(f"source.{key}_file: {path} is empty")
        return value
    return None


@dataclass(frozen=True)
class Credentials:
    """User name, password and API key for a source; secrets are left out of ``repr``."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> Credentials:
        """Read the secrets the settings point at (``ConfigError`` when one is missing)."""
        return cls(
            username=settings.username,
            password=read_secret(settings.password_env, settings.password_file, "password"),
            api_key=read_secret(settings.api_key_env, settings.api_key_file, "api_key"),
        )

    def http_headers(self) -> dict[str, str]:
        """``Authorization: Basic`` (when a user is set) and ``X-Api-Key`` (OctoPrint) headers."""
        headers: dict[str, str] = {}
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        if self.api_key:
            headers["X-Api-Key"] = self.api_key
        return headers
