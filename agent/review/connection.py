"""The receiver's MQTT connection: a persistent session, subscriptions, manual acknowledgements.

The session is persistent (MQTT 5: clean start off and ``session_expiry_s``; 3.1.1: clean
session off) with a fixed client id, so what agents publish while the receiver is down is
delivered when it comes back. Messages are acknowledged by the receiver once stored (or
refused), only on the connection that delivered them: after a reconnect the broker sends the
unacknowledged ones again.

No Maximum Packet Size is announced (a broker may keep a message it must not send in our window
for good); oversized packets are cut by ``guard.PacketGuard`` on the way in. Receive Maximum is
announced as a hint only: memory is bounded by the receiver's queue, which stops paho reading
from the socket when it is full.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config.review import ReviewMqttSettings
from agent.mqtt.connection import explain_refusal, new_paho_client
from agent.review.guard import PacketGuard

log = logging.getLogger(__name__)


class _GuardedClient(mqtt.Client):
    """paho's client reading through a ``PacketGuard``."""

    guard_max_bytes = 0
    guard: PacketGuard | None = None

    def _create_socket(self) -> Any:
        sock = super()._create_socket()
        self.guard = PacketGuard(sock, self.guard_max_bytes, mqtt5=self.protocol == mqtt.MQTTv5)
        return self.guard


class ReviewConnection:
    """Connects, subscribes and acknowledges; ``on_message(message, connection_number)`` runs on
    paho's network thread for every message."""

    def __init__(
        self,
        settings: ReviewMqttSettings,
        max_packet_bytes: int,
        on_message: Callable[[mqtt.MQTTMessage, int], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.v5 = settings.protocol == "5"
        self.number = 0  # which connection: acks go only to the connection that delivered a message
        self.connected = False
        self.subscribed = False
        self._handle = on_message
        self._on_subscribed = on_subscribed
        self._problem_logged = False
        self._stopping = False
        self._ack_lock = threading.Lock()
        self.client = new_paho_client(
            settings, settings.client_id, _GuardedClient, persistent_session=True, manual_ack=True
        )
        self.client.guard_max_bytes = max_packet_bytes
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background (paho's network thread, with its reconnect backoff)."""
        m = self.settings
        if self.v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry_s
            props.ReceiveMaximum = m.inflight_max
            self.client.connect_async(
                m.host, m.effective_port, m.keepalive_s, clean_start=False, properties=props
            )
        else:
            self.client.connect_async(m.host, m.effective_port, m.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        """Disconnect and stop paho's thread."""
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, mid: int, qos: int, connection: int) -> None:
        """Acknowledge a QoS 1 message delivered on ``connection`` (nothing for QoS 0 or when that
        connection is gone: the broker sends it again on the next one)."""
        if qos > 0 and connection == self.number:
            with self._ack_lock:
                self.client.ack(mid, qos)

    def oversized_prefix(self) -> bytes | None:
        """The marker payload prefix of the current connection's guard."""
        guard = self.client.guard
        return guard.marker_prefix if guard is not None else None

    # ---- paho's callbacks (network thread) --------------------------------------------------
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        m = self.settings
        if reason.is_failure:
            if not self._problem_logged:
                self._problem_logged = True
                log.error("review: the broker %s (retrying)", explain_refusal(m, reason, m.client_id))
            return
        self.number += 1
        self.connected = True
        self._problem_logged = False
        log.info(
            "review: connected to %s:%d as %r (session %s)",
            m.host, m.effective_port, m.client_id, "resumed" if flags.session_present else "new",
        )  # fmt: skip
        filters = m.topic_filters()
        if self.v5:
            options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND)
            client.subscribe([(f, options) for f in filters])
        else:
            client.subscribe([(f, 1) for f in filters])

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._problem_logged:
            self._problem_logged = True
            log.warning(
                "review: the broker %s:%d is not reachable; retrying with backoff (messages wait in our "
                "session on the broker)",
                self.settings.host, self.settings.effective_port,
            )  # fmt: skip

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was_connected, self.connected = self.connected, False
        if was_connected and not self._stopping:
            log.warning(
                "review: connection lost (%s); reconnecting", getattr(reason, "getName", lambda: reason)()
            )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        m = self.settings
        failed = [c for c in codes if getattr(c, "is_failure", False)]
        if failed:
            log.error(
                "review: the broker refused the subscriptions %s (%s); its ACL must let this user read "
                "%s/+/frames/+ and %s/+/annotations/+",
                m.topic_filters(), ", ".join(c.getName() for c in failed), m.topic_prefix, m.topic_prefix,
            )  # fmt: skip
            return
        first = not self.subscribed
        self.subscribed = True
        log.info("review: subscribed to %s", " and ".join(m.topic_filters()))
        if first and self._on_subscribed is not None:
            self._on_subscribed()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._handle(message, self.number)
