"""The MQTT sender: the paho connection and the thread that empties the outbox onto it.

Two threads meet here:

- paho's network thread (``connect_async`` + ``loop_start``) reconnects with capped
  exponential backoff; our callbacks on it only enqueue events and wake the sender;
- the sender thread (``mqtt-sender``) owns everything else: it drains the outbox into a
  bounded in-flight window, deletes messages on PUBACK, publishes the retained
  latest-value topics (status, stats, failure, image, view, discovery) and logs connection
  problems once each.

paho keeps messages it was given across reconnects and resends them itself, so the sender
hands each stored message to paho once per process; after a restart the outbox is drained
from the start again (a message acknowledged just before a kill can arrive twice, with the
same frame id). The caller's side (building and storing messages) is ``agent.mqtt.publisher``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config.mqtt import MqttSettings
from agent.flow import EventBus, FrameSynced
from agent.mqtt import homeassistant
from agent.mqtt.connection import (
    PahoClient,
    PahoErrorHandler,
    clean_socket_detail,
    describe_exception,
    explain_refusal,
    explain_socket_failure,
    new_paho_client,
)
from agent.mqtt.messages import MessageClass, StoredMessage
from agent.mqtt.outbox import Outbox
from agent.mqtt.publish_properties import PackedPublishProperties
from agent.mqtt.topics import JSON_TYPE, OFFLINE, ONLINE, STOPPED, Topics

log = logging.getLogger(__name__)

_CHECKPOINT_INTERVAL_S = 2.0
_IDLE_WAIT_S = 0.5
# After a wake-up the sender lets frames and acknowledgements gather this long before it reads
# and deletes rows: one SELECT, one DELETE and one wake-up of paho's thread then serve several
# frames (at 80 fps a wake-up used to carry one frame or a single PUBACK; sender and paho CPU
# 1.05 -> 0.6 ms a frame). Skipped while more than a window of messages waits (a backlog
# draining after an outage, a very fast model): then acknowledgements set the pace.
_GATHER_S = 0.05
_PACKET_OVERHEAD = 1024  # fixed header, topic length, packet id and our properties, generously


@dataclass(frozen=True, slots=True)
class _Event:
    kind: str  # connected | disconnected | connect_failed | ack | ha_birth
    reason: ReasonCode | None = None
    mid: int = 0
    detail: str = ""
    max_packet: int = 0


class Sender:
    """The paho client and the ``mqtt-sender`` thread for one publisher's ``outbox``.

    ``wake()`` after storing messages; ``set_latest`` for retained values (only the last one of a
    topic is sent); ``counters()`` and ``connected`` for stats. A ``FrameSynced`` event is posted to
    ``events`` when the broker has acknowledged a frame's JPEG.
    """

    def __init__(
        self, settings: MqttSettings, topics: Topics, outbox: Outbox, *, events: EventBus | None = None
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.events = events
        self._v5 = settings.protocol == "5"
        self._outbox = outbox
        self._client = self._build_client()
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the latest-value slots and counters read by counters()
        self._latest: dict[str, bytes] = {}
        self._latest_dirty: set[str] = set()
        self._mids: dict[int, int] = {}  # paho mid -> outbox seq
        self._link_up = False
        self._ever_connected = False
        self._problems_logged: set[str] = set()  # since the last successful connection
        self._last_error: str | None = None
        self._transport_error = ""
        self._refusal_logged: set[int] = set()
        self._counters = {"sent": 0, "acked": 0, "refused": 0, "connects": 0}
        self._closing = threading.Event()
        self._clean_close = True
        self._status_mid: int | None = None
        self._max_packet = 0  # the broker's MQTT 5 Maximum Packet Size (0: no limit announced)
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._started = False

    def _build_client(self) -> PahoClient:
        s = self.settings
        client = new_paho_client(s, s.effective_client_id, PahoClient)
        client.max_inflight_messages_set(s.outbox.inflight_max)
        client.max_queued_messages_set(0)
        client.will_set(self.topics.status, OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # paho formats every packet's debug line for an on_log callback; a logger at ERROR level
        # lets it skip that (~0.1 ms a message), and still hands us the transport errors
        paho_log = logging.Logger("paho", logging.ERROR)  # not registered: goes with this publisher
        paho_log.addHandler(PahoErrorHandler(self._on_paho_error))
        client.enable_logger(paho_log)
        return client

    def start(self) -> None:
        """Start connecting (in the background) and the sender thread."""
        self._started = True
        s = self.settings
        if self._v5:
            self._client.connect_async(s.host, s.effective_port, s.keepalive_s, clean_start=True)
        else:
            self._client.connect_async(s.host, s.effective_port, s.keepalive_s)
        self._client.loop_start()
        self._thread.start()

    def wake(self) -> None:
        """Messages were stored: send them soon."""
        self._wake.set()

    def set_latest(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained on ``topic``; only the latest value of a topic is sent."""
        with self._lock:
            self._latest[topic] = payload
            self._latest_dirty.add(topic)
        self._wake.set()

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._link_up

    def counters(self) -> tuple[dict[str, int], str | None]:
        """Messages ``sent``, ``acked``, ``refused`` and ``connects`` since start, and the last
        connection problem (None since the last successful connection)."""
        with self._lock:
            return dict(self._counters), self._last_error

    def stop(self, clean: bool) -> None:
        """While connected, spend up to ``close_timeout_s`` sending what the outbox holds, then
        publish ``stopped`` (``clean``) or ``offline`` and disconnect."""
        self._clean_close = clean
        if not self._started:
            return
        self._closing.set()
        self._wake.set()
        self._thread.join(self.settings.close_timeout_s + 5.0)
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        # Bounded: paho's thread may sit in a connect attempt; it is a daemon and ends on its own.
        stopper.join(2.0)

    # ---- paho callbacks: only enqueue and wake ---------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        max_packet = int(getattr(properties, "MaximumPacketSize", 0) or 0)
        self._events.put(_Event("connected", reason=reason, max_packet=max_packet))
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        error = self._client.last_socket_error
        self._events.put(_Event("connect_failed", detail=describe_exception(error)))
        self._wake.set()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        self._events.put(_Event("disconnected", reason=reason, detail=self._transport_error))
        self._transport_error = ""
        self._wake.set()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        self._events.put(_Event("ack", reason=reason, mid=mid))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.payload == ONLINE.encode():
            self._events.put(_Event("ha_birth"))
            self._wake.set()

    def _on_paho_error(self, text: str) -> None:
        self._transport_error = text
        if text.startswith("Caught exception"):
            log.error("MQTT: %s", text)

    # ---- the sender thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        next_checkpoint = time.monotonic() + _CHECKPOINT_INTERVAL_S
        while not self._closing.is_set():
            self._wake.wait(_IDLE_WAIT_S)
            if self._link_up and len(self._outbox) <= self.settings.outbox.inflight_max:
                self._closing.wait(_GATHER_S)
            self._wake.clear()
            try:
                self._handle_events()
                if self._link_up and not self._closing.is_set():
                    self._send_latest()
                    self._fill_window()
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + _CHECKPOINT_INTERVAL_S
                    self._outbox.enforce_bounds()
                    self._outbox.checkpoint()
            except Exception:  # the sender must outlive any single bad message or disk hiccup
                log.exception("MQTT sender: unexpected error; continuing")
                time.sleep(_IDLE_WAIT_S)
        self._finish()

    def _finish(self) -> None:
        deadline = time.monotonic() + self.settings.close_timeout_s
        try:
            if self._link_up:  # the final stats, set just before closing (sent ahead of the status)
                self._send_latest()
            # Connected: drain what is queued (a recording that just ended), not only what is in flight.
            while self._link_up and len(self._outbox) and time.monotonic() < deadline:
                self._fill_window()
                self._wait_and_handle(deadline)
            if self._link_up:
                status = STOPPED if self._clean_close else OFFLINE
                info = self._client.publish(self.topics.status, status, qos=1, retain=True)
                self._status_mid = info.mid
                while self._link_up and self._status_mid is not None and time.monotonic() < deadline:
                    self._wait_and_handle(deadline)
            self._outbox.checkpoint()
        except Exception:
            log.exception("MQTT sender: error while closing")
        left = len(self._outbox)
        if left:
            log.info("MQTT: %d message(s) stay in the outbox for the next start", left)

    def _wait_and_handle(self, deadline: float) -> None:
        self._wake.wait(max(0.0, min(0.1, deadline - time.monotonic())))
        self._wake.clear()
        self._handle_events()

    def _handle_events(self) -> None:
        acked: list[int] = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if event.kind == "ack":
                seq = self._mids.pop(event.mid, None)
                if seq is None:
                    if event.mid == self._status_mid:
                        self._status_mid = None
                elif event.reason is not None and event.reason.is_failure:
                    self._refused(seq, event.reason)
                else:
                    acked.append(seq)
            elif event.kind == "connected":
                self._max_packet = event.max_packet
                self._connected(event.reason)
            elif event.kind == "disconnected":
                self._disconnected(event.reason, event.detail)
            elif event.kind == "connect_failed":
                self._report_problem(*self._explain_socket_failure(event.detail))
            elif event.kind == "ha_birth":
                self._publish_discovery()
        if acked:
            self._acknowledged(acked)

    def _acknowledged(self, seqs: list[int]) -> None:
        done = self._outbox.ack(seqs)
        with self._lock:
            self._counters["acked"] += len(done)
        if self.events is None:
            return
        for item in done:
            if item.message.klass == MessageClass.FRAME and item.message.frame_id:
                self.events.post(FrameSynced(item.message.frame_id))

    def _refused(self, seq: int, reason: ReasonCode) -> None:
        item = self._outbox.refuse(seq)
        with self._lock:
            self._counters["refused"] += 1
        if item is not None and reason.value not in self._refusal_logged:
            self._refusal_logged.add(reason.value)
            hint = ""
            if reason.value == 0x87:
                hint = (
                    f"; the broker's ACL must let user {self.settings.username!r} write "
                    f"{self.topics.base}/# (e.g. `pattern write {self.settings.topic_prefix}/%u/#` with "
                    f"device_id equal to the user name)"
                )
            log.error(
                "MQTT broker refused a message on %s: %s (reason code %d)%s; such messages are dropped and "
                "counted as 'refused' (logged once per reason)",
                item.message.topic,
                reason.getName(),
                reason.value,
                hint,
            )

    def _connected(self, reason: ReasonCode | None) -> None:
        if reason is not None and reason.is_failure:
            self._report_problem(*self._explain_refusal(reason))
            return
        s = self.settings
        with self._lock:
            self._link_up = True
            self._counters["connects"] += 1
            self._last_error = None
        self._problems_logged.clear()
        log.info(
            "MQTT: %s %s:%d (outbox: %d waiting)",
            "reconnected to" if self._ever_connected else "connected to",
            s.host,
            s.effective_port,
            len(self._outbox),
        )
        self._ever_connected = True
        self._client.publish(self.topics.status, ONLINE, qos=1, retain=True)
        with self._lock:
            self._latest_dirty.update(self._latest)
        if s.home_assistant.enabled:
            self._client.subscribe(homeassistant.birth_topic(s), qos=1)
            self._publish_discovery()

    def _disconnected(self, reason: ReasonCode | None, transport_error: str) -> None:
        if not self._link_up:
            # The attempt failed before CONNACK: a TLS alert from the broker, or a refusal.
            if transport_error:
                self._report_problem(*self._explain_socket_failure(transport_error))
            return
        with self._lock:
            self._link_up = False
        if self._closing.is_set():
            return
        why = transport_error or (reason.getName() if reason is not None else "unknown reason")
        with self._lock:
            self._last_error = f"connection lost: {why}"
        log.warning(
            "MQTT: connection to %s:%d lost (%s); reconnecting with backoff up to %g s, messages wait in "
            "the outbox",
            self.settings.host,
            self.settings.effective_port,
            why,
            self.settings.reconnect_max_s,
        )

    def _report_problem(self, key: str, level: int, message: str) -> None:
        """Log a connection problem once (again only after a successful connection); retries repeat it
        at debug level only. ``stats()["last_error"]`` always holds the latest."""
        with self._lock:
            self._last_error = message
        if key not in self._problems_logged:
            self._problems_logged.add(key)
            log.log(level, "%s", message)
        else:
            log.debug("%s", message)

    def _explain_refusal(self, reason: ReasonCode) -> tuple[str, int, str]:
        s = self.settings
        message = (
            f"MQTT broker {explain_refusal(s, reason, s.effective_client_id)}. Retrying with backoff; "
            f"messages wait in the outbox."
        )
        return f"refused:{reason.value}", logging.ERROR, message

    def _explain_socket_failure(self, detail: str) -> tuple[str, int, str]:
        failure = explain_socket_failure(self.settings, detail)
        key = f"{failure.kind}:{clean_socket_detail(detail)}"
        if failure.kind != "unreachable":
            return key, logging.ERROR, f"MQTT: {failure.message}"
        message = (
            f"MQTT broker {failure.message}; retrying with backoff up to {self.settings.reconnect_max_s:g} s, "
            f"messages wait in the outbox."
        )
        return key, logging.WARNING, message

    def _publish_discovery(self) -> None:
        if not (self._link_up and self.settings.home_assistant.enabled):
            return
        for topic, payload in homeassistant.discovery_messages(self.settings, self.topics):
            self._client.publish(topic, payload, qos=1, retain=True)

    def _send_latest(self) -> None:
        with self._lock:
            pending = [(t, self._latest[t]) for t in self._latest_dirty]
            self._latest_dirty.clear()
        for topic, payload in pending:
            props = None
            if self._v5 and topic == self.topics.stats:
                props = Properties(PacketTypes.PUBLISH)
                props.ContentType = JSON_TYPE
            self._client.publish(topic, payload, qos=1, retain=True, properties=props)

    def _fill_window(self) -> None:
        room = self.settings.outbox.inflight_max - self._outbox.inflight_count
        if room <= 0:
            return
        now = time.time()
        for item in self._outbox.take(room):
            if self._max_packet and item.message.size + _PACKET_OVERHEAD > self._max_packet:
                # Sending it would only get us disconnected, again and again.
                log.error(
                    "MQTT: %s is %d bytes, over the broker's maximum packet size (%d); dropped. Lower "
                    "mqtt.frame_max_width_px / frame_jpeg_quality or raise the broker's max_packet_size",
                    item.message.topic,
                    item.message.size,
                    self._max_packet,
                )
                self._outbox.refuse(item.seq)
                continue
            try:
                info = self._client.publish(
                    item.message.topic,
                    item.message.payload,
                    qos=item.message.qos,
                    retain=item.message.retain,
                    properties=self._properties(item, now),
                )
            except ValueError as exc:  # e.g. a payload over MQTT's 256 MB limit
                log.error("MQTT: cannot publish %s (%s); dropped", item.message.topic, exc)
                self._outbox.refuse(item.seq)
                continue
            if item.message.qos == 0:
                self._outbox.ack([item.seq])
            else:
                self._mids[info.mid] = item.seq
            with self._lock:
                self._counters["sent"] += 1

    def _properties(self, item: StoredMessage, now: float) -> Properties | None:
        if not self._v5:
            return None
        message = item.message
        return PackedPublishProperties(
            content_type=message.content_type,
            utf8_payload=message.content_type == JSON_TYPE,
            user_properties=message.user_properties,
            expiry_s=item.remaining_expiry_s(now),
        )
