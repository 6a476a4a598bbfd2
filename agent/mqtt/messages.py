"""What the outbox stores: a message to publish, its priority class, and a stored row."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any


class MessageClass(IntEnum):
    """Priority class: lower values are sent first and dropped last."""

    ALERT = 0
    DETECTION = 1
    ANNOTATION = 2
    FRAME = 3

    @property
    def label(self) -> str:
        """Lower-case name used in stats (``alert``, ``detection``, ``annotation``, ``frame``)."""
        return self.name.lower()


# Order in which the size bound evicts: frames give way first, alerts last.
EVICTION_ORDER = (MessageClass.FRAME, MessageClass.ANNOTATION, MessageClass.DETECTION, MessageClass.ALERT)
DROP_REASONS = ("expired", "age", "size", "refused", "missing")


@dataclass(frozen=True, slots=True)
class Message:
    """One message to publish. ``expiry_s`` is the MQTT 5 message expiry (None: none);
    ``frame_id`` ties it to a frame (reported when the broker acknowledges a frame);
    ``payload_file`` names a file holding exactly ``payload``, which the outbox may keep as a
    hard link instead of copying the bytes."""

    topic: str
    payload: bytes
    klass: MessageClass
    qos: int = 1
    retain: bool = False
    content_type: str | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    expiry_s: int | None = None
    frame_id: str | None = None
    payload_file: str | Path | None = None

    @property
    def size(self) -> int:
        """Bytes counted against the outbox bound: payload plus topic."""
        return len(self.payload) + len(self.topic)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as stored: ``seq`` (sending order), wall-clock ``created`` and ``expires`` (s);
    ``size`` the bytes it counts against the bound; ``link`` the name of its payload's hard link in
    the outbox's files folder (None: the payload is in SQLite) and ``crc`` that payload's CRC-32."""

    seq: int
    message: Message
    created: float
    expires: float | None
    size: int
    link: str | None = None
    crc: int | None = None

    def with_payload(self, payload: bytes) -> StoredMessage:
        """This message carrying ``payload`` (read from its link)."""
        return dataclasses.replace(self, message=dataclasses.replace(self.message, payload=payload))

    def remaining_expiry_s(self, now: float) -> int | None:
        """Whole seconds left before expiry (at least 1), or None without expiry."""
        if self.expires is None:
            return None
        return max(1, int(self.expires - now))


COLUMNS = (
    "seq, topic, payload, qos, retain, klass, content_type, user_properties, "
    "expiry_s, frame_id, created, expires, size, payload_file, payload_crc"
)


def row_to_stored(row: tuple[Any, ...]) -> StoredMessage:
    """The stored message of a row (an empty payload when it is in a linked file)."""
    (
        seq,
        topic,
        payload,
        qos,
        retain,
        klass,
        content_type,
        user_props,
        expiry_s,
        frame_id,
        created,
        expires,
        size,
        link,
        crc,
    ) = row
    props = tuple((str(k), str(v)) for k, v in json.loads(user_props)) if user_props else ()
    message = Message(
        topic=topic,
        payload=bytes(payload),
        klass=MessageClass(klass),
        qos=int(qos),
        retain=bool(retain),
        content_type=content_type,
        user_properties=props,
        expiry_s=expiry_s,
        frame_id=frame_id,
    )
    return StoredMessage(
        seq=int(seq),
        message=message,
        created=float(created),
        expires=expires,
        size=int(size),
        link=link,
        crc=crc,
    )
