"""Doctor's broker area: connect once as the agent would (TLS, credentials), wait for CONNACK.

A broker the config does not need is not a failure: with ``mqtt.enabled: false`` the row is SKIP,
and a broker that does not answer is a WARN, because the agent runs without one and keeps every
message in its on-disk outbox (bounded by ``mqtt.outbox.max_mb`` and ``max_age_h``) until a broker
answers. A broker that answers and refuses us (credentials, TLS trust, a client certificate), or a
password the agent cannot read, is a FAIL: those messages would never leave.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from agent.config.mqtt import MqttSettings
from agent.doctor.checks import Check, CheckFunction, DoctorContext, Status, problem
from agent.errors import UserError


@dataclass
class BrokerProbe:
    """What one connection attempt to the broker saw."""

    ok: bool
    message: str
    reason_code: int | None = None
    seconds: float = 0.0
    tls_version: str | None = None
    unreachable: bool = False  # nothing answered at all (refused, timed out, no route, unknown host)


def probe_broker(settings: MqttSettings, timeout_s: float) -> BrokerProbe:
    """Connect once with the publisher's TLS context and credentials, wait for CONNACK, disconnect.

    The client id is the agent's with ``-doctor`` appended, so a running agent is not thrown off,
    and no will is set, so its retained status is untouched. Raises ``ConfigError`` for TLS files
    or a password that cannot be read.
    """
    import paho.mqtt.client as mqtt

    from agent.mqtt.connection import (
        describe_exception,
        explain_refusal,
        explain_socket_failure,
        new_paho_client,
    )

    host, port = settings.host, settings.effective_port
    where = f"{host}:{port}"
    client_id = f"{settings.effective_client_id}-doctor"
    client = new_paho_client(settings, client_id, mqtt.Client, reconnect=False)
    client.connect_timeout = timeout_s
    seen: dict[str, Any] = {}
    client.on_connect = lambda c, u, flags, reason, props: seen.setdefault("connack", reason)
    client.on_disconnect = lambda c, u, flags, reason, props: seen.setdefault("disconnect", reason)
    client.on_log = lambda c, u, level, text: (
        seen.setdefault("error", text) if level == mqtt.MQTT_LOG_ERR else None
    )
    started = time.monotonic()
    try:
        client.connect(host, port, settings.keepalive_s)
    except ssl.SSLError as exc:
        return BrokerProbe(
            False, explain_socket_failure(settings, describe_exception(exc), tls_failed=True).message
        )
    except socket.gaierror as exc:
        text = f"cannot resolve mqtt.host {host!r} ({exc.strerror}); fix the host name"
        return BrokerProbe(False, text, unreachable=True)
    except ConnectionRefusedError:
        return BrokerProbe(
            False,
            f"nothing listens on {where} (connection refused); start the broker or fix mqtt.host / mqtt.port",
            unreachable=True,
        )
    except TimeoutError:
        return BrokerProbe(
            False,
            f"no answer from {where} within {timeout_s:g} s; check mqtt.host, the network and firewalls",
            unreachable=True,
        )
    except OSError as exc:
        return BrokerProbe(False, f"cannot connect to {where}: {exc.strerror or exc}", unreachable=True)
    try:
        deadline = started + timeout_s
        while "connack" not in seen and "disconnect" not in seen and time.monotonic() < deadline:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        elapsed = time.monotonic() - started
        sock = client.socket()
        tls_version = sock.version() if isinstance(sock, ssl.SSLSocket) else None
        reason = seen.get("connack")
        if reason is None:
            text = _explain_no_connack(settings, str(seen.get("error") or ""), timeout_s)
            return BrokerProbe(False, text, seconds=elapsed, tls_version=tls_version)
        if reason.is_failure:
            return BrokerProbe(
                False,
                explain_refusal(settings, reason, client_id),
                reason_code=reason.value,
                seconds=elapsed,
                tls_version=tls_version,
            )
        return BrokerProbe(True, "accepted", reason.value, elapsed, tls_version)
    finally:
        client.disconnect()
        client.loop(timeout=0.1)


def _explain_no_connack(settings: MqttSettings, error: str, timeout_s: float) -> str:
    """Why the broker closed the connection (or said nothing) before CONNACK, from paho's error log."""
    from agent.mqtt.connection import clean_socket_detail, explain_socket_failure

    where = f"{settings.host}:{settings.effective_port}"
    cause = clean_socket_detail(error)
    failure = explain_socket_failure(settings, cause)
    if failure.kind == "tls-client-cert":
        return failure.message
    low = cause.lower()
    if settings.use_tls and ("eof" in low or "reset" in low):
        # TLS 1.3: a broker refusing the client sends its alert after the handshake; our CONNECT,
        # already on its way, often makes the alert arrive as a bare EOF or reset instead.
        if settings.cert_file:
            return (
                f"the broker at {where} closed the TLS connection ({cause}); it may not accept our client "
                "certificate (mqtt.cert_file must be signed by a CA in the broker's cafile); see its log"
            )
        return (
            f"the broker at {where} closed the TLS connection ({cause}); it probably requires a client "
            "certificate: set mqtt.cert_file and key_file"
        )
    if cause:
        hint = "" if settings.use_tls else "; if the port expects TLS, set mqtt.tls or mqtt.ca_file"
        return f"{where} closed the connection before answering ({cause}){hint}"
    if not settings.use_tls:
        return f"no MQTT answer from {where} within {timeout_s:g} s; is it a TLS port (set mqtt.tls)?"
    return f"no MQTT answer from {where} within {timeout_s:g} s"


def check_broker(settings: MqttSettings, timeout_s: float) -> Check:
    """The broker accepts our connection (TLS, credentials) when MQTT is enabled: OK; SKIP when
    MQTT is off; WARN when no broker answers (the outbox keeps the messages); FAIL when a broker
    answers and refuses us, or the password cannot be read."""
    if not settings.enabled:
        return Check("broker", Status.SKIP, "mqtt.enabled is false")
    timeout = min(timeout_s, settings.connect_timeout_s)
    try:
        probe = probe_broker(settings, timeout)
    except UserError as exc:
        return problem("broker", True, str(exc))
    tls = f"TLS {probe.tls_version or 'on'}" if settings.use_tls else "no TLS"
    user = f"user {settings.username!r}" if settings.username else "anonymous"
    facts = f"MQTT {settings.protocol}, {tls}, {user}"
    data = {
        "host": settings.host,
        "port": settings.effective_port,
        "reason_code": probe.reason_code,
        "seconds": round(probe.seconds, 3),
        "tls": settings.use_tls,
    }
    if probe.ok:
        detail = f"{settings.host}:{settings.effective_port} accepted us ({facts}) in {probe.seconds:.2f} s"
        return Check("broker", Status.OK, detail, required=True, data=data)
    if probe.unreachable:
        outbox = settings.outbox
        return problem(
            "broker",
            False,
            f"{probe.message} ({facts}). Not needed to run: messages wait in the outbox (up to "
            f"mqtt.outbox.max_mb {outbox.max_mb:g} MB, max_age_h {outbox.max_age_h:g}) until a broker answers",
            "start a broker there, or set mqtt.enabled: false when this device publishes nothing",
            data=data,
        )
    return problem(
        "broker",
        True,
        f"{probe.message} ({facts}). The agent would run, but its messages would never leave the outbox",
        data=data,
    )


def _check_broker_row(context: DoctorContext) -> list[Check]:
    return [check_broker(context.config.mqtt, context.options.timeout_s)]


CHECKS: list[CheckFunction] = [_check_broker_row]
