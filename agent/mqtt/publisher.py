"""The MQTT publisher the pipeline calls: it builds messages and stores them in the outbox.

The caller (the pipeline's output stage) never waits for the network: ``publish_*`` store
messages in the on-disk outbox (``agent.mqtt.outbox``) and wake the sender
(``agent.mqtt.sender``), whose thread sends them and deletes each one its broker acknowledged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agent.config.mqtt import MqttSettings
from agent.encode import EncodedImage, published_jpeg
from agent.flow import EventBus
from agent.frames import FrameResult
from agent.mqtt.messages import Message
from agent.mqtt.outbox import Outbox
from agent.mqtt.sender import Sender
from agent.mqtt.topics import (
    Topics,
    alert_message,
    annotated_jpeg,
    annotation_message,
    detections_message,
    frame_message,
    stats_payload,
)
from agent.stats import MqttStats

log = logging.getLogger(__name__)


def create_publisher(settings: MqttSettings, *, events: EventBus | None = None) -> MqttPublisher | None:
    """A started ``MqttPublisher``, or None when ``settings.enabled`` is false."""
    if not settings.enabled:
        return None
    publisher = MqttPublisher(settings, events=events)
    publisher.start()
    return publisher


class MqttPublisher:
    """Publishes detections, frames, annotations, alerts and stats through the on-disk outbox.

    A ``FrameSynced`` event is posted to ``events`` (for the output thread) when the
    broker has acknowledged a frame's JPEG. Create, ``start()``, call ``publish_*`` from any
    thread, ``close()`` at exit. A broker that is down is not an error: messages wait.
    """

    def __init__(self, settings: MqttSettings, *, events: EventBus | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix, settings.device_id)
        self._outbox = Outbox(
            settings.outbox.path,
            max_bytes=int(settings.outbox.max_mb * 1024 * 1024),
            max_age_s=settings.outbox.max_age_h * 3600.0,
        )
        self._sender = Sender(settings, self.topics, self._outbox, events=events)
        self._store_failed = 0
        self._store_failed_lock = threading.Lock()  # publish_* may be called from any thread
        self._started = False
        self._closed = False

    # ---- set-up ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start connecting (in the background) and sending what the outbox holds."""
        if self._started:
            return
        self._started = True
        s = self.settings
        waiting = len(self._outbox)
        log.info(
            "MQTT: publishing to %s:%d as %r (device %r, MQTT %s, TLS %s); outbox %s holds %d message(s)",
            s.host,
            s.effective_port,
            s.effective_client_id,
            s.device_id,
            s.protocol,
            "on" if s.use_tls else "off",
            s.outbox.path,
            waiting,
        )
        if s.insecure_skip_verify:
            log.warning("MQTT: insecure_skip_verify is on: the broker's certificate is NOT verified")
        self._sender.start()

    def __enter__(self) -> MqttPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(clean=True)

    # ---- what the pipeline calls -----------------------------------------------------------------------

    def publish_detections(self, result: FrameResult, *, kept: bool = False) -> None:
        """Queue the ``detections`` JSON of one processed frame."""
        self._store(detections_message(self.topics, result, kept))

    def publish_frame(self, result: FrameResult, annotation: bool = True) -> None:
        """Queue a kept frame's JPEG (resized to ``frame_max_width_px`` when wider) and, with
        ``annotation``, its annotation (the detections record for that JPEG). With Home Assistant
        on, the frame with its boxes drawn also becomes the retained ``image``."""
        self._store(*self._frame_messages(result, annotation, None, None))

    def publish_result(
        self,
        result: FrameResult,
        *,
        kept: bool,
        picture: EncodedImage | None = None,
        picture_file: Path | None = None,
    ) -> None:
        """The ``detections`` of one processed frame and, when ``kept``, its JPEG and annotation,
        stored in one transaction. ``picture``: the frame as the VoTT stage stored it (reused when it
        is a JPEG that needs no resize), at ``picture_file`` (the outbox then links to that file)."""
        messages = [detections_message(self.topics, result, kept)]
        try:
            if kept:
                messages += self._frame_messages(result, True, picture, picture_file)
        finally:  # a frame that cannot be encoded still has its detections published
            self._store(*messages)

    def _frame_messages(
        self, result: FrameResult, annotation: bool, picture: EncodedImage | None, picture_file: Path | None
    ) -> list[Message]:
        s = self.settings
        encoded = published_jpeg(result.frame, picture, s.frame_max_width_px, s.frame_jpeg_quality)
        on_disk = str(picture_file) if picture_file is not None and encoded is picture else None
        messages = [frame_message(self.topics, result.frame, encoded, s.frame_expiry_s, on_disk)]
        if annotation:
            messages.append(annotation_message(self.topics, result, encoded))
        if s.home_assistant.enabled:
            image = annotated_jpeg(result, s.frame_max_width_px, s.frame_jpeg_quality)
            self._set_latest(self.topics.image, image)
        return messages

    def publish_alert(self, payload: Mapping[str, Any]) -> None:
        """Queue an alert (JSON; ``device_id`` and ``timestamp`` added when absent). Alerts are sent
        before anything else waiting and dropped last. A boolean ``active`` in the payload also sets
        the retained ``failure`` state (``set_failure``)."""
        self._store(alert_message(self.topics, payload))
        active = payload.get("active")
        if isinstance(active, bool):
            self.set_failure(active)

    def publish_view(self, payload: Mapping[str, Any]) -> None:
        """Queue a view event (``view_changed``, ``obstructed``, ``view_restored``) like an alert, and
        set it as the retained ``view`` state (the Home Assistant "Camera view" sensor)."""
        message = alert_message(self.topics, payload)  # adds device_id and timestamp when absent
        self._store(message)
        self._set_latest(self.topics.view, message.payload)

    def set_failure(self, active: bool) -> None:
        """Set the retained ``failure`` state (``ON``/``OFF``), the Home Assistant binary sensor."""
        self._set_latest(self.topics.failure, b"ON" if active else b"OFF")

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        """Set the retained ``stats`` JSON: ``stats`` plus ``mqtt`` (this publisher's ``stats()``).
        Only the latest value is kept; call it every ``pipeline.stats_interval_s``."""
        self._set_latest(self.topics.stats, stats_payload(self.topics.device_id, stats, self.stats()))

    def stats(self) -> MqttStats:
        """Connection and outbox figures (``agent.stats.MqttStats``)."""
        counters, last_error = self._sender.counters()
        return {
            "connected": self._sender.connected,
            "last_error": last_error,
            "sent": counters["sent"],
            "acked": counters["acked"],
            "refused": counters["refused"],
            "connects": counters["connects"],
            "store_failed": self._store_failed,
            "outbox": self._outbox.stats() if not self._closed else {},
        }

    def close(self, clean: bool = True) -> None:
        """Stop: while connected, spend up to ``close_timeout_s`` sending what the outbox holds, then
        publish ``stopped`` (``clean``) or ``offline`` and disconnect. What was not acknowledged stays
        in the outbox for the next start."""
        if self._closed:
            return
        self._sender.stop(clean)
        self._closed = True
        self._outbox.close()

    # ---- storing ---------------------------------------------------------------------------------------

    def _store(self, *messages: Message) -> None:
        if self._closed:
            raise RuntimeError("MQTT publisher is closed")
        try:
            self._outbox.put_many(messages)
        except Exception as exc:  # a full or failing disk must not stop the pipeline
            with self._store_failed_lock:
                first = self._store_failed == 0
                self._store_failed += len(messages)
            if first:
                log.error("MQTT outbox %s cannot store messages (%s); they are lost", self._outbox.path, exc)
            return
        self._sender.wake()

    def _set_latest(self, topic: str, payload: bytes) -> None:
        self._sender.set_latest(topic, payload)
