"""MQTT 5 PUBLISH properties, packed once by us.

paho's generic ``Properties`` checks every attribute it is given against its table of names and
packs through the same look-ups: about 0.1 ms a message, a third of the sender thread's CPU for a
frame with its user properties. paho only ever calls ``pack()`` on the properties of a PUBLISH,
so a ``Properties`` whose ``pack()`` returns bytes computed here is all it needs. The encoding
is MQTT 5.0 section 3.3.2.3 (identifiers and types from section 2.2.2.2).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_PAYLOAD_FORMAT_INDICATOR = 0x01  # byte: 1 means UTF-8 text
_MESSAGE_EXPIRY_INTERVAL = 0x02  # four byte integer, seconds
_CONTENT_TYPE = 0x03  # UTF-8 string
_USER_PROPERTY = 0x26  # UTF-8 string pair, may repeat


class PackedPublishProperties(Properties):
    """The properties of one PUBLISH, packed at construction; paho sends them as they are.

    ``Properties.__init__`` is not called: it builds paho's tables of names and types for every
    instance (~20 us a message), and nothing here reads them."""

    def __init__(
        self,
        *,
        content_type: str | None = None,
        utf8_payload: bool = False,
        user_properties: Sequence[tuple[str, str]] = (),
        expiry_s: int | None = None,
    ) -> None:
        packed = pack_publish_properties(content_type, utf8_payload, user_properties, expiry_s)
        # paho's __setattr__ accepts property names only
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        object.__setattr__(self, "_packed", packed)

    def pack(self) -> bytes:
        """The property length and the properties, as they go on the wire."""
        packed: bytes = object.__getattribute__(self, "_packed")
        return packed

    def isEmpty(self) -> bool:  # paho's name
        """Whether no property is set (only the zero length byte)."""
        return len(self.pack()) == 1

    def json(self) -> dict[str, object]:
        """Not kept as attributes here: the packed bytes are all there is."""
        raise NotImplementedError("PackedPublishProperties holds packed bytes only")

    def __str__(self) -> str:
        return f"[{len(self.pack())} bytes of packed properties]"


def pack_publish_properties(
    content_type: str | None,
    utf8_payload: bool,
    user_properties: Sequence[tuple[str, str]],
    expiry_s: int | None,
) -> bytes:
    """The PUBLISH property length (variable byte integer) followed by the properties. Raises
    ValueError for a string over 65,535 bytes in UTF-8 or an expiry outside 0..2**32-1 seconds."""
    body = bytearray()
    if utf8_payload:
        body += bytes((_PAYLOAD_FORMAT_INDICATOR, 1))
    if expiry_s is not None:
        if not 0 <= expiry_s <= 0xFFFFFFFF:
            raise ValueError(f"message expiry {expiry_s} s is outside 0..4294967295")
        body.append(_MESSAGE_EXPIRY_INTERVAL)
        body += struct.pack(">I", expiry_s)
    if content_type:
        body.append(_CONTENT_TYPE)
        body += _utf8(content_type)
    for key, value in user_properties:
        body.append(_USER_PROPERTY)
        body += _utf8(key)
        body += _utf8(value)
    return _variable_byte_integer(len(body)) + bytes(body)


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError(f"an MQTT string holds at most 65535 bytes, not {len(data)}: {text[:40]!r}...")
    return struct.pack(">H", len(data)) + data


def _variable_byte_integer(value: int) -> bytes:
    out = bytearray()
    while True:
        digit, value = value % 128, value // 128
        out.append(digit | 0x80 if value else digit)
        if not value:
            return bytes(out)
