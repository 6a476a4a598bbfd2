"""Connecting to a broker: TLS, credentials, a paho client set up from the settings, and what a
refusal or a failed connection means in words a user can act on (shared by the agent's publisher
and the review receiver)."""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.mqtt import BrokerConnection
from agent.errors import ConfigError


def build_tls_context(settings: BrokerConnection) -> ssl.SSLContext:
    """The client TLS context: the broker is verified against ``ca_file`` (system CAs when unset)
    and, for mutual TLS, ``cert_file``/``key_file`` are presented. Raises ``ConfigError`` for a
    missing or unreadable file."""
    for key in ("ca_file", "cert_file", "key_file"):
        value = getattr(settings, key)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"mqtt.{key} {value!r} does not exist or is not a file; fix the path")
    try:
        ca = str(Path(settings.ca_file).expanduser()) if settings.ca_file else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
        if settings.cert_file:
            key_path = str(Path(settings.key_file).expanduser()) if settings.key_file else None
            context.load_cert_chain(str(Path(settings.cert_file).expanduser()), key_path)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"mqtt TLS files cannot be loaded ({exc.reason or exc}); ca_file must hold PEM CA certificates, "
            f"cert_file the client certificate and key_file its unencrypted private key"
        ) from None
    if settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


_PahoClient = TypeVar("_PahoClient", bound=mqtt.Client)


def new_paho_client(
    settings: BrokerConnection,
    client_id: str,
    client_class: type[_PahoClient],
    *,
    persistent_session: bool = False,
    reconnect: bool = True,
    manual_ack: bool = False,
) -> _PahoClient:
    """A paho client (of ``client_class``) set up from ``settings``: MQTT version, credentials, TLS,
    connect timeout and, with ``reconnect``, paho's reconnect backoff. Callbacks and connecting are
    the caller's.

    ``persistent_session`` keeps the broker session across connections with MQTT 3.1.1 (with MQTT 5
    the caller chooses ``clean_start`` when connecting). Raises ``ConfigError`` for TLS files or a
    password that cannot be read.
    """
    password = settings.read_password()
    tls_context = build_tls_context(settings) if settings.use_tls else None
    v5 = settings.protocol == "5"
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        clean_session=None if v5 else not persistent_session,
        reconnect_on_failure=reconnect,
        manual_ack=manual_ack,
    )
    if reconnect:
        # paho accepts float seconds here although its annotation says int.
        client.reconnect_delay_set(cast(int, settings.reconnect_min_s), cast(int, settings.reconnect_max_s))
    client.connect_timeout = settings.connect_timeout_s
    if settings.username is not None or password is not None:
        client.username_pw_set(settings.username, password)
    if tls_context is not None:
        client.tls_set_context(tls_context)
        if settings.insecure_skip_verify:
            client.tls_insecure_set(True)
    return client


_REFUSAL_HINTS = {
    0x84: "the broker does not speak this MQTT version; try mqtt.protocol: '3.1.1'",
    0x85: "the broker rejected client id {client_id!r}; set mqtt.client_id",
    0x86: "check mqtt.username and the password (mqtt.password_env or mqtt.password_file)",
    # Mosquitto answers a wrong password with 0x87 too.
    0x87: "check mqtt.username and the password (mqtt.password_env or mqtt.password_file), and that "
    "the broker allows this user, client id or certificate",
    0x8A: "this client is banned by the broker",
    0x8C: "the broker wants another authentication method",
}


def explain_refusal(settings: BrokerConnection, reason: ReasonCode, client_id: str) -> str:
    """Why the broker refused our CONNECT as ``client_id``, and what to change:
    ``<host>:<port> refused the connection: <reason> (reason code <n>); <hint>``."""
    hint = _REFUSAL_HINTS.get(reason.value, "see the broker's log").format(client_id=client_id)
    return (
        f"{settings.host}:{settings.effective_port} refused the connection: {reason.getName()} "
        f"(reason code {reason.value}); {hint}"
    )


class SocketFailure(NamedTuple):
    """A failed connection attempt explained: ``kind`` groups repeats of the same problem."""

    kind: Literal["tls-verify", "tls-client-cert", "tls", "unreachable"]
    message: str


def explain_socket_failure(
    settings: BrokerConnection, detail: str, *, tls_failed: bool = False
) -> SocketFailure:
    """What a failed connection attempt means and what to change, from its error text ``detail``
    (an exception described by ``describe_exception`` or paho's log line).

    ``tls_failed``: the error is known to come from TLS (an ``ssl.SSLError``) whatever its text.
    """
    detail = clean_socket_detail(detail)
    where = f"{settings.host}:{settings.effective_port}"
    low = detail.lower()
    if "certificate verify failed" in low or "hostname mismatch" in low:
        return SocketFailure(
            "tls-verify",
            f"TLS to {where} failed, the broker's certificate is not trusted: {detail}; mqtt.ca_file must be "
            f"the CA that signed the broker's certificate, and mqtt.host a name (or IP) in that certificate",
        )
    if "certificate required" in low or ("handshake failure" in low and settings.cert_file is None):
        return SocketFailure(
            "tls-client-cert",
            f"the broker at {where} requires a client certificate ({detail}); set mqtt.cert_file and "
            f"mqtt.key_file to a certificate signed by the CA the broker trusts",
        )
    if "unknown ca" in low or "bad certificate" in low or "certificate unknown" in low:
        return SocketFailure(
            "tls-client-cert",
            f"the broker at {where} rejected our client certificate ({detail}); mqtt.cert_file must be "
            f"signed by a CA in the broker's cafile",
        )
    if tls_failed or "wrong version number" in low or "ssl" in low or "tls" in low:
        hint = (
            "is the port a TLS listener?"
            if settings.use_tls
            else "the port may expect TLS: set mqtt.tls / ca_file"
        )
        return SocketFailure("tls", f"TLS with {where} failed ({detail}); {hint}")
    return SocketFailure("unreachable", f"{where} is not reachable ({detail or 'connection failed'})")


class PahoClient(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed: paho's reconnect loop
    swallows that exception (``on_connect_fail`` gets no argument), yet the user needs the reason
    (refused, certificate not trusted, ...)."""

    last_socket_error: BaseException | None = None

    def _create_socket(self) -> Any:
        self.last_socket_error = None
        try:
            return super()._create_socket()
        except Exception as exc:
            self.last_socket_error = exc
            raise


class PahoErrorHandler(logging.Handler):
    """Hands paho's error log lines (socket and TLS failures) to a callback."""

    def __init__(self, on_error: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.on_error = on_error

    def emit(self, record: logging.LogRecord) -> None:
        """Pass the formatted line on (paho's network loop must never see our exception)."""
        try:
            self.on_error(record.getMessage())
        except Exception:
            self.handleError(record)


_SSL_DETAIL = re.compile(r"\[SSL: [A-Z0-9_]+\] ([^(]+?)\s*(\(_ssl\.c:\d+\))?$")


def clean_socket_detail(text: str) -> str:
    """paho's socket error text without its noise: ``failed to receive on socket: [SSL: X] tlsv13 alert
    ... (_ssl.c:2580)`` -> ``tlsv13 alert ...``; ``failed to receive on socket: Connection reset by
    peer`` -> ``Connection reset by peer``."""
    match = _SSL_DETAIL.search(text)
    return match.group(1) if match else text.removeprefix("failed to receive on socket: ")


def describe_exception(error: BaseException | None) -> str:
    """A connection error in a few words (``certificate verify failed: ...``, ``Connection refused``);
    "" for None."""
    if error is None:
        return ""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error).replace("_", " ").lower() if error.reason else str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
