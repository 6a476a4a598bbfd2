"""The receiver: subscribes to the agents' frames and annotations and files them in the store.

Threads: paho's network thread only enqueues messages (``on_message``); one worker thread
(``run()``) checks each message, stores it, and only then acknowledges it (paho's manual acks),
so a message is removed from our broker session only once it is on disk. The session is
persistent (MQTT 5: clean start off and ``session_expiry_s``; 3.1.1: clean session off) with a
fixed client id, so what agents publish while the receiver is down is delivered when it comes
back. The broker sends at most ``inflight_max`` unacknowledged messages at a time (MQTT 5
Receive Maximum), which bounds the queue, and none bigger than the larger size cap plus 64 KiB
(MQTT 5 Maximum Packet Size: the broker drops those without sending them, so they never reach
the receiver or its stats; slightly oversized ones arrive and are counted as too large).

Every second the worker also seals and closes due batches (``ReviewStore.housekeeping``); every
``stats_interval_s`` it logs a summary and writes ``<root>/.edge-agent-review/stats-<client>.json``.
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
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.config.review import ReviewSettings
from agent.fsutil import atomic_write_json
from agent.mqtt.client import explain_refusal, new_paho_client
from agent.naming import safe_name
from agent.review.annotation import parse_annotation
from agent.review.checks import Rejected, check_jpeg, parse_topic
from agent.review.stats import ReviewStats
from agent.review.store import ReviewStore
from agent.utc import utc_iso

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 1.0
_MAX_PACKET_LIMIT = 268_435_455  # the largest packet MQTT can describe
_QOS0_QUEUE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class _Item:
    topic: str
    payload: bytes
    qos: int
    mid: int
    connection: int  # which connection delivered it: acks go only to the connection that sent it


class ReviewReceiver:
    """Receives frames and annotations from the broker into a ``ReviewStore``.

    ``run()`` blocks until ``stop()`` (safe from a signal handler) and returns the final stats."""

    def __init__(self, settings: ReviewSettings, store: ReviewStore | None = None) -> None:
        self.settings = settings
        self.store = store if store is not None else ReviewStore(settings)
        self.stats = ReviewStats()
        self._v5 = settings.mqtt.protocol == "5"
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._stop = threading.Event()
        self._connection = 0
        self._connected = False
        self._subscribed = False
        self._problem_logged = False
        self._started_at = time.time()
        self._stats_file = self.store.state_dir / f"stats-{safe_name(settings.mqtt.client_id, 100)}.json"
        self._client = self._build_client()

    # ---- the connection ---------------------------------------------------------------------
    def _build_client(self) -> mqtt.Client:
        m = self.settings.mqtt
        client = new_paho_client(m, m.client_id, mqtt.Client, persistent_session=True, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _max_packet_bytes(self) -> int:
        largest = max(self.settings.max_jpeg_bytes, self.settings.max_annotation_bytes)
        return min(_MAX_PACKET_LIMIT, largest + 65536)

    def _connect(self) -> None:
        m = self.settings.mqtt
        port = m.effective_port
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = m.session_expiry_s
            props.ReceiveMaximum = m.inflight_max
            props.MaximumPacketSize = self._max_packet_bytes()
            self._client.connect_async(m.host, port, m.keepalive_s, clean_start=False, properties=props)
        else:
            self._client.connect_async(m.host, port, m.keepalive_s)
        self._client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            if not self._problem_logged:
                self._problem_logged = True
                m = self.settings.mqtt
                log.error("review: the broker %s (retrying)", explain_refusal(m, reason, m.client_id))
            return
        self._connection += 1
        self._connected = True
        self._problem_logged = False
        log.info(
            "review: connected to %s:%d as %r (session %s)",
            self.settings.mqtt.host,
            self.settings.mqtt.effective_port,
            self.settings.mqtt.client_id,
            "resumed" if flags.session_present else "new",
        )
        filters = self.settings.mqtt.topic_filters()
        if self._v5:
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
                self.settings.mqtt.host, self.settings.mqtt.effective_port,
            )  # fmt: skip

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        was_connected, self._connected = self._connected, False
        if was_connected and not self._stop.is_set():
            log.warning(
                "review: connection lost (%s); reconnecting", getattr(reason, "getName", lambda: reason)()
            )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        failed = [c for c in codes if getattr(c, "is_failure", False)]
        if failed:
            log.error(
                "review: the broker refused the subscriptions %s (%s); its ACL must let this user read "
                "%s/+/frames/+ and %s/+/annotations/+",
                self.settings.mqtt.topic_filters(),
                ", ".join(c.getName() for c in failed),
                self.settings.mqtt.topic_prefix,
                self.settings.mqtt.topic_prefix,
            )
            return
        self._subscribed = True
        log.info("review: subscribed to %s", " and ".join(self.settings.mqtt.topic_filters()))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.qos == 0 and self._queue.qsize() >= _QOS0_QUEUE_LIMIT:
            self.stats.received("other")
            self.stats.dropped("overloaded", "QoS 0 message while the queue is full", message.topic)
            return
        self._queue.put(
            _Item(message.topic, bytes(message.payload), message.qos, message.mid, self._connection)
        )

    # ---- the worker -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Connect and process messages until ``stop()``; returns the final stats."""
        s = self.settings
        reviewer = s.reviewer_root or str(self.store.root)
        log.info(
            "review: %s:%d (MQTT %s, TLS %s), client %r%s; projects under %s (reviewer sees %s); batches by %s",
            s.mqtt.host,
            s.mqtt.effective_port,
            s.mqtt.protocol,
            "on" if s.mqtt.use_tls else "off",
            s.mqtt.client_id,
            f", shared group {s.mqtt.shared_group!r}" if s.mqtt.shared_group else "",
            self.store.root,
            reviewer,
            f"count ({s.batch_size})" if s.batch_by == "count" else s.batch_by,
        )
        next_housekeeping = time.monotonic() + HOUSEKEEPING_INTERVAL_S
        next_stats = time.monotonic() + s.stats_interval_s
        try:
            self.store.hold_receiver_lock()
            self.store.remove_temp_files()
            self._housekeeping()
            self._connect()
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=min(HOUSEKEEPING_INTERVAL_S, 0.2))
                except queue.Empty:
                    item = None
                if item is not None:
                    self._process(item)
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
                    self._housekeeping()
                if now >= next_stats:
                    next_stats = now + s.stats_interval_s
                    log.info("review: %s%s", self.stats.interval_summary(), self._batch_summary())
                    self._write_stats()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            left = self._queue.qsize()
            if left:
                log.info("review: %d message(s) not processed; the broker sends them again next time", left)
            log.info("review: stopped; %s%s", self.stats.interval_summary(), self._batch_summary())
            self._write_stats()
            self.store.close()
        return self.stats_snapshot()

    def stop(self) -> None:
        """Finish the message at hand and stop (unprocessed messages stay with the broker)."""
        self._stop.set()

    def _process(self, item: _Item) -> None:
        """Check and store one message, count what happened to it, then acknowledge it."""
        kind = "other"
        outcome: str | None = None
        drop: tuple[str, str] | None = None
        try:
            device, kind, frame_id = parse_topic(item.topic, self.settings.mqtt.topic_prefix)
            outcome = self._store(device, kind, frame_id, item.payload)
        except Rejected as exc:
            drop = exc.reason, exc.detail
        except OSError as exc:
            drop = "write_failed", f"{exc.strerror or exc} ({exc.filename})"
        except Exception as exc:  # a bug must not stop the receiver; the message is dropped
            log.exception("review: unexpected error on %r", item.topic[:200])
            drop = "internal_error", f"{type(exc).__name__}: {exc}"
        self.stats.received(kind)
        if drop is not None:
            self.stats.dropped(*drop, item.topic)
        elif outcome is not None:
            self.stats.outcome(outcome)
        if item.qos > 0 and item.connection == self._connection:
            self._client.ack(item.mid, item.qos)

    def _store(self, device: str, kind: str, frame_id: str, payload: bytes) -> str:
        s = self.settings
        if kind == "frames":
            if len(payload) > s.max_jpeg_bytes:
                raise Rejected("frame_too_large", f"{len(payload)} bytes, max_jpeg_mb is {s.max_jpeg_mb:g}")
            check_jpeg(payload, s.max_image_px)
            return self.store.put_frame(device, frame_id, payload)
        if len(payload) > s.max_annotation_bytes:
            raise Rejected(
                "annotation_too_large", f"{len(payload)} bytes, max_annotation_kb is {s.max_annotation_kb:g}"
            )
        annotation = parse_annotation(
            payload,
            device,
            frame_id,
            max_side_px=s.max_image_px,
            max_regions=s.max_regions,
            max_label_chars=s.max_label_chars,
        )
        return self.store.put_annotation(device, frame_id, annotation)

    def _housekeeping(self) -> None:
        try:
            self.store.housekeeping()
        except Exception:
            log.exception("review: sealing/closing batches failed; retrying in a second")

    # ---- stats ------------------------------------------------------------------------------
    def stats_snapshot(self) -> dict[str, Any]:
        """Message counters (``ReviewStats.snapshot``) plus connection state, queue length and the
        store's counters (batches sealed/closed, assets written, ...)."""
        out: dict[str, Any] = {
            "client_id": self.settings.mqtt.client_id,
            "updated_at": utc_iso(time.time()),
            "started_at": utc_iso(self._started_at),
            "connected": self._connected,
            "subscribed": self._subscribed,
            "waiting": self._queue.qsize(),
        }
        out.update(self.stats.snapshot())
        out.update(dict(self.store.counters))
        return out

    def _batch_summary(self) -> str:
        c = self.store.counters
        return (
            f"; batches sealed {c['batches_sealed']}, closed {c['batches_closed']}, "
            f"assets written {c['assets_written']}"
        )

    def _write_stats(self) -> None:
        try:
            atomic_write_json(self._stats_file, self.stats_snapshot(), fsync=False)
        except OSError as exc:
            log.warning("review: cannot write %s: %s", self._stats_file, exc)
