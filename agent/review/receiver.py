"""The receiver: takes the agents' frames and annotations off the broker into the store.

Threads and what bounds them:

* paho's network thread reads messages through ``guard.PacketGuard`` (an oversized packet never
  enters memory) and runs ``_on_message``, which refuses at once, acknowledges and counts what
  needs no payload parsing: a topic that is not ours, bad ids, a payload over its size cap, a
  QoS 0 message while the queue is full. Everything else goes into the ``FairInbox`` (bounded by
  ``queue_max_messages`` and ``queue_max_mb``); while it is full, the network thread waits there
  and stops reading the socket, so the broker keeps the rest in our session. Unless the device of
  a QoS 1 message holds its fair share of the full inbox: then it goes to the spool on disk
  (``spool.py``, bounded by ``spool_max_mb``) and is acknowledged at once, and so do that device's
  next messages until its spool is empty, so one device's backlog does not hold up the others.
* ``workers`` worker threads take messages round-robin per device (one device to one worker
  at a time), check the payload (JPEG, the annotation's schema), store it, and only then
  acknowledge it: a message leaves our broker session once it is on disk or refused. Several
  workers overlap the waits (fsync, a network file system) and the decoding, which releases
  the GIL. A message whose device lock cannot be had in ``lock_wait_s`` (another receiver holds
  it) is retried later by the same worker, never dropped.
* the main thread (``run()``) seals and closes due batches every second, writes the heartbeat
  and, every ``stats_interval_s``, logs a summary and writes
  ``<root>/.edge-agent-review/stats-<client>.json``.

So no device can stall another: refused messages leave the broker's in-flight window as soon as
they are read, and accepted ones are served device by device. ``on_progress`` (the systemd
watchdog) is called by the main thread, every 0.2 s, unless a worker has been on one message
since its previous look: a stuck worker, or a stuck main thread, stops it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from agent.config.review import ReviewSettings
from agent.fsutil import atomic_write_json
from agent.naming import safe_name
from agent.review.annotation import Annotation, parse_annotation
from agent.review.checks import Rejected, check_jpeg, check_size, parse_topic
from agent.review.connection import ReviewConnection
from agent.review.inbox import FairInbox
from agent.review.locks import LockLost, LockTimeout
from agent.review.spool import SpooledMessage, open_spool, spool_stats
from agent.review.stats import ReviewStats
from agent.review.store import ReviewStore
from agent.utc import utc_iso

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 1.0
HEARTBEAT_INTERVAL_S = 5.0
RETRY_DELAY_S = 1.0
DEVICE_RUN = 16  # a device's queued messages stored under one hold of its lock, at most
SPOOL_RUN_BYTES = 1024 * 1024  # a run of spooled messages read into memory, at most (and one message)
_PACKET_HEADROOM = 65536  # topic and properties on top of the largest payload we accept


@dataclass(frozen=True, slots=True)
class _Item:
    topic: str
    device: str
    kind: str
    frame_id: str
    payload: bytes
    qos: int
    mid: int
    connection: int
    spool_seq: int | None = None  # a message from the spool: acknowledged already; removed when done


@dataclass
class _WorkerState:
    busy: bool = False
    finished: int = 0  # messages finished (stored, refused or put aside for a retry)
    seen: int = 0  # ``finished`` when the main loop last looked
    retry: deque[tuple[float, _Item]] = field(default_factory=deque)  # (when, message), its own


class ReviewReceiver:
    """Receives frames and annotations from the broker into a ``ReviewStore``.

    ``run()`` blocks until ``stop()`` (safe from a signal handler) and returns the final stats."""

    def __init__(
        self,
        settings: ReviewSettings,
        store: ReviewStore | None = None,
        *,
        on_progress: Callable[[], None] | None = None,
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if store is not None else ReviewStore(settings, owner=settings.mqtt.client_id)
        self.stats = ReviewStats()
        self.inbox: FairInbox[_Item] = FairInbox(settings.queue_max_messages, settings.queue_max_bytes)
        self.spool = open_spool(
            self.store.state_dir, settings.mqtt.client_id, settings.spool_max_bytes, fsync=settings.fsync
        )
        for device, count in self.spool.pending().items() if self.spool is not None else ():
            self.inbox.add_spooled(device, count)  # left by an earlier run: served first
        self._workers = [_WorkerState() for _ in range(settings.workers)]
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._started_at = time.time()
        self._stats_file = self.store.state_dir / f"stats-{safe_name(settings.mqtt.client_id, 100)}.json"
        largest = max(settings.max_jpeg_bytes, settings.max_annotation_bytes)
        self.connection = ReviewConnection(
            settings.mqtt, largest + _PACKET_HEADROOM, self._on_message, on_subscribed
        )

    # ---- paho's network thread ----------------------------------------------------------------
    def _on_message(self, message: mqtt.MQTTMessage, connection: int) -> None:
        """Refuse, acknowledge and count at once what needs no parsing; queue the rest."""
        mid, qos, payload = message.mid, message.qos, message.payload
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker must not deliver this; refuse it all the same
            self._finish(mid, qos, connection, "other", drop=("bad_topic", "topic is not UTF-8"))
            return
        try:
            device, kind, frame_id = parse_topic(topic, self.settings.mqtt.topic_prefix)
        except Rejected as exc:
            self._finish(mid, qos, connection, "other", drop=(exc.reason, exc.detail), topic=topic)
            return
        try:
            check_size(kind, payload, self.connection.oversized_prefix(), self.settings)
        except Rejected as exc:
            self._finish(mid, qos, connection, kind, drop=(exc.reason, exc.detail), topic=topic)
            return
        item = _Item(topic, device, kind, frame_id, bytes(payload), qos, mid, connection)
        if qos > 0 and self._spooled(item):
            return
        if not self.inbox.put(device, item, len(payload), block=qos > 0) and qos == 0:
            self._finish(
                mid,
                0,
                connection,
                kind,
                drop=("overloaded", "QoS 0 message while the queue is full"),
                topic=topic,
            )
        # a QoS 1 message refused by a closed inbox: we are stopping; the broker sends it again

    def _spooled(self, item: _Item) -> bool:
        """Queue ``item`` if there is room; else, or when its device has spooled messages already,
        write it to the spool and acknowledge it. False: the caller queues it, waiting for room."""
        device, spool = item.device, self.spool
        if spool is None:
            return False
        keep_order = spool.holds(device)
        if not keep_order:
            if self.inbox.put(device, item, len(item.payload), block=False):
                return True
            if not self.inbox.holds_fair_share(device):
                return False
        if not spool.put(
            device,
            item.topic,
            item.payload,
            block=keep_order,
            then=functools.partial(
                self.connection.ack, item.mid, item.qos, item.connection
            ),  # not the payload
        ):
            # full, or a write failed (logged): wait for room in the queue; after a failed write the
            # message may be stored before the device's older spooled ones (a disk error, rare)
            return False
        self.inbox.add_spooled(device)
        return True

    def _finish(
        self,
        mid: int,
        qos: int,
        connection: int,
        kind: str,
        *,
        outcome: str | None = None,
        drop: tuple[str, str] | None = None,
        topic: str = "",
    ) -> None:
        """Count what happened to a message, then acknowledge it."""
        self.stats.received(kind)
        if drop is not None:
            self.stats.dropped(*drop, topic)
        elif outcome is not None:
            self.stats.outcome(outcome)
        self.connection.ack(mid, qos, connection)

    def _finish_item(
        self, item: _Item, *, outcome: str | None = None, drop: tuple[str, str] | None = None
    ) -> None:
        """``_finish`` for a message taken from the queue or the spool (which is acknowledged
        already: its file is removed instead)."""
        if item.spool_seq is None:
            self._finish(
                item.mid, item.qos, item.connection, item.kind, outcome=outcome, drop=drop, topic=item.topic
            )
            return
        self._finish(0, 0, item.connection, item.kind, outcome=outcome, drop=drop, topic=item.topic)
        if self.spool is not None:
            self.spool.remove(item.device, item.spool_seq)

    # ---- the worker ---------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Connect and process messages until ``stop()``; returns the final stats."""
        s = self.settings
        log.info(
            "review: %s:%d (MQTT %s, TLS %s), client %r%s; projects under %s (reviewer sees %s); batches by %s",
            s.mqtt.host, s.mqtt.effective_port, s.mqtt.protocol, "on" if s.mqtt.use_tls else "off",
            s.mqtt.client_id, f", shared group {s.mqtt.shared_group!r}" if s.mqtt.shared_group else "",
            self.store.root, s.reviewer_root or str(self.store.root),
            f"count ({s.batch_size})" if s.batch_by == "count" else s.batch_by,
        )  # fmt: skip
        now = time.monotonic()
        next_housekeeping, next_stats, next_beat = now, now + s.stats_interval_s, now
        workers = [
            threading.Thread(target=self._work, args=(state,), name=f"review-worker-{i}", daemon=True)
            for i, state in enumerate(self._workers)
        ]
        try:
            self.store.remove_temp_files()
            self.connection.start()
            for worker in workers:
                worker.start()
            while not self._stop.wait(0.2):
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + HEARTBEAT_INTERVAL_S
                    self._beat()
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_INTERVAL_S
                    self._housekeeping()
                if now >= next_stats:
                    next_stats = now + s.stats_interval_s
                    log.info("review: %s%s", self.stats.interval_summary(), self._batch_summary())
                    self._write_stats()
                if self._on_progress is not None and self._workers_progress():
                    self._on_progress()
        finally:
            self._stop.set()
            self.inbox.close()
            if self.spool is not None:
                self.spool.close()
            self.connection.stop()
            for worker in workers:
                worker.join(max(5.0, s.lock_wait_s + 5.0))
            left = self.inbox.stats().messages + sum(len(w.retry) for w in self._workers)
            if left:
                log.info("review: %d message(s) not processed; the broker sends them again next time", left)
            if spooled := spool_stats(self.spool)["messages"]:
                log.info("review: %d message(s) wait in the spool for the next start", spooled)
            log.info("review: stopped; %s%s", self.stats.interval_summary(), self._batch_summary())
            self._write_stats()
            self.store.presence.leave()
            self.store.close()
        return self.stats_snapshot()

    def stop(self) -> None:
        """Finish the message at hand and stop (unprocessed messages stay with the broker)."""
        self._stop.set()

    def _work(self, state: _WorkerState) -> None:
        """One worker: messages from the inbox (or its own due retries), one device at a time; the
        device's other queued messages (up to ``DEVICE_RUN``) go with the first under one lock."""
        while not self._stop.is_set():
            got = self._next_item(state)
            if got is None:
                continue
            device, item = got
            state.busy = True
            items: list[_Item] = []
            try:
                if item is None:
                    items = self._spooled_run(device)
                else:
                    items = [item, *self.inbox.take_more(device, DEVICE_RUN - 1)]
                if items:
                    self._process_run(items, state)
            finally:
                self.inbox.done(device)
                state.busy = False
                state.finished += max(1, len(items))

    def _next_item(self, state: _WorkerState) -> tuple[str, _Item | None] | None:
        """A retried message that is due, else the inbox's next (waiting up to 0.2 s); its device
        and None for a turn of the device's spooled messages."""
        if state.retry and state.retry[0][0] <= time.monotonic():
            item = state.retry.popleft()[1]
            return item.device, item
        if len(state.retry) >= self.settings.queue_max_messages:
            time.sleep(0.05)  # the retries are our queue now: take nothing new meanwhile
            return None
        return self.inbox.get(timeout_s=0.2)

    def _spooled_run(self, device: str) -> list[_Item]:
        """The device's oldest spooled messages, read from disk: up to ``DEVICE_RUN`` of them and
        ``SPOOL_RUN_BYTES`` (one at least)."""
        assert self.spool is not None
        items: list[_Item] = []
        size = 0
        while True:
            try:
                message = self.spool.take(device)
            except OSError:  # unreadable now (logged): its turn comes again, after a pause
                self.inbox.add_spooled(device)
                self._stop.wait(RETRY_DELAY_S)
                return items
            item = self._spooled_item(message) if message is not None else None
            if item is not None:
                items.append(item)
                size += len(item.payload)
            if len(items) >= DEVICE_RUN or size + (self.spool.next_size(device) or 0) > SPOOL_RUN_BYTES:
                return items
            if not self.inbox.take_spooled(device):
                return items

    def _spooled_item(self, message: SpooledMessage) -> _Item | None:
        """A spooled message as a queue item; None when its topic no longer parses (the topic
        prefix changed since it was spooled: dropped and removed)."""
        assert self.spool is not None
        try:
            device, kind, frame_id = parse_topic(message.topic, self.settings.mqtt.topic_prefix)
            if device != message.device:  # a file put there by hand
                raise Rejected("bad_topic", f"a message of {device!r} in the spool of {message.device!r}")
        except Rejected as exc:
            self._finish(0, 0, 0, "other", drop=(exc.reason, exc.detail), topic=message.topic)
            self.spool.remove(message.device, message.seq)
            return None
        return _Item(message.topic, device, kind, frame_id, message.payload, 1, 0, -1, message.seq)

    def _workers_progress(self) -> bool:
        """True unless a worker has been on one message since the last call (stuck, or slow)."""
        progressing = True
        for state in self._workers:
            finished = state.finished
            if state.busy and finished == state.seen:
                progressing = False
            state.seen = finished
        return progressing

    def _process_run(self, items: list[_Item], state: _WorkerState) -> None:
        """Check each message (refused ones are counted and acknowledged at once), then store the
        rest under one hold of their device's lock, acknowledging each once it is on disk."""
        checked = []
        for item in items:
            ok, note = self._check(item)
            if ok:
                checked.append((item, note))
        if not checked:
            return
        try:
            with self.store.holding(items[0].device):
                for item, note in checked:
                    self._put(item, note, state)
                return
        except (LockTimeout, LockLost) as exc:  # the device's lock could not be had: all wait
            state.retry.extend((time.monotonic() + RETRY_DELAY_S, item) for item, _ in checked)
            self.stats.retried(str(exc))
            return
        except Rejected as exc:  # e.g. a new device over max_devices
            drop = exc.reason, exc.detail
        except OSError as exc:
            drop = "write_failed", f"{exc.strerror or exc} ({exc.filename})"
        except Exception as exc:  # a bug must not stop the receiver; the messages are dropped
            log.exception("review: unexpected error on device %r", items[0].device)
            drop = "internal_error", f"{type(exc).__name__}: {exc}"
        for item, _ in checked:
            self._finish_item(item, drop=drop)

    def _check(self, item: _Item) -> tuple[bool, Annotation | None]:
        """``(True, annotation)`` or ``(True, None)`` for a frame when the payload passes;
        ``(False, None)`` when it was refused (counted and acknowledged)."""
        s = self.settings
        try:
            if item.kind == "frames":
                check_jpeg(item.payload, s.max_image_px, int(s.max_image_mpx * 1e6))
                return True, None
            return True, parse_annotation(
                item.payload,
                item.device,
                item.frame_id,
                max_side_px=s.max_image_px,
                max_regions=s.max_regions,
                max_label_chars=s.max_label_chars,
            )
        except Rejected as exc:
            drop = exc.reason, exc.detail
        except Exception as exc:  # a bug must not stop the receiver; the message is dropped
            log.exception("review: unexpected error on %r", item.topic[:200])
            drop = "internal_error", f"{type(exc).__name__}: {exc}"
        self._finish_item(item, drop=drop)
        return False, None

    def _put(self, item: _Item, note: Annotation | None, state: _WorkerState) -> None:
        """Store one checked message, count what happened to it, then acknowledge it."""
        outcome: str | None = None
        drop: tuple[str, str] | None = None
        try:
            if note is None:
                outcome = self.store.put_frame(item.device, item.frame_id, item.payload)
            else:
                outcome = self.store.put_annotation(item.device, item.frame_id, note)
        except Rejected as exc:
            drop = exc.reason, exc.detail
        except (LockTimeout, LockLost) as exc:
            state.retry.append((time.monotonic() + RETRY_DELAY_S, item))
            self.stats.retried(str(exc))
            return
        except OSError as exc:
            drop = "write_failed", f"{exc.strerror or exc} ({exc.filename})"
        except Exception as exc:  # a bug must not stop the receiver; the message is dropped
            log.exception("review: unexpected error on %r", item.topic[:200])
            drop = "internal_error", f"{type(exc).__name__}: {exc}"
        self._finish_item(item, outcome=outcome, drop=drop)

    def _housekeeping(self) -> None:
        try:
            self.store.housekeeping()
        except (LockTimeout, LockLost) as exc:
            log.warning("review: sealing/closing batches waits for another receiver (%s)", exc)
        except Exception:
            log.exception("review: sealing/closing batches failed; retrying in a second")

    def _beat(self) -> None:
        try:
            self.store.presence.beat()
        except OSError as exc:
            log.warning("review: cannot write the receiver heartbeat: %s", exc)

    # ---- stats --------------------------------------------------------------------------------
    def stats_snapshot(self) -> dict[str, Any]:
        """Message counters (``ReviewStats.snapshot``) plus connection state, queue and the store's
        counters (batches sealed/closed, assets written, frames re-sent, ...)."""
        queue = self.inbox.stats()
        retrying = sum(len(w.retry) for w in self._workers)
        guard = self.connection.client.guard
        out: dict[str, Any] = {
            "client_id": self.settings.mqtt.client_id,
            "updated_at": utc_iso(time.time()),
            "started_at": utc_iso(self._started_at),
            "connected": self.connection.connected,
            "subscribed": self.connection.subscribed,
            "waiting": queue.messages + retrying,
            "queue": {
                "messages": queue.messages,
                "bytes": queue.bytes,
                "devices": queue.devices,
                "peak_messages": queue.peak_messages,
                "peak_bytes": queue.peak_bytes,
                "reading_paused_s": queue.blocked_s,
                "retrying": retrying,
            },
            "spool": spool_stats(self.spool),
            "oversized_cut": guard.oversized if guard is not None else 0,
        }
        spooled_retrying = sum(item.spool_seq is not None for w in self._workers for _, item in w.retry)
        out["waiting"] += out["spool"]["messages"] - spooled_retrying  # their files count in the spool
        out.update(self.stats.snapshot())
        out.update(dict(self.store.counters))
        out["locks_broken"] = self.store.locks.broken
        return out

    def status_line(self) -> str:
        """One line for systemd's STATUS."""
        snap = self.stats_snapshot()
        link = "subscribed" if snap["subscribed"] else ("connected" if snap["connected"] else "not connected")
        return (
            f"{link}; {snap['frames_written']} frames, {snap['annotations_stored']} annotations stored, "
            f"{snap['duplicates']} duplicates, {snap['dropped_total']} dropped; queue {snap['waiting']}"
        )

    def _batch_summary(self) -> str:
        c = self.store.counters
        spool = spool_stats(self.spool)
        return (
            f"; batches sealed {c['batches_sealed']}, closed {c['batches_closed']}, "
            f"assets written {c['assets_written']}; spool {spool['messages']} messages "
            f"({spool['spooled_total']} spooled since start)"
        )

    def _write_stats(self) -> None:
        try:
            atomic_write_json(self._stats_file, self.stats_snapshot(), fsync=False)
        except OSError as exc:
            log.warning("review: cannot write %s: %s", self._stats_file, exc)
