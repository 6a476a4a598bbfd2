"""A socket wrapper that keeps oversized PUBLISH packets out of memory, whatever the broker sends.

The receiver does not rely on the broker honouring an MQTT 5 Maximum Packet Size (Mosquitto 2.0
keeps a message it may not send in our in-flight window for good, which stalls every device once
the window is full). Instead the broker sends everything, and this wrapper, between the TCP/TLS
socket and paho, parses the stream of MQTT packets: a PUBLISH whose remaining length is over
``max_packet_bytes`` is handed to paho as the same PUBLISH (topic, packet id, QoS, flags) with
no properties and a small marker payload ``OVERSIZED_PREFIX + token + b":" + <original payload
size>``, while its real bytes are read and thrown away as they arrive. paho then calls
``on_message`` as for any message, the receiver counts it as too large and acknowledges it at
once. Memory per connection: one topic (at most 64 KiB) and one read chunk.

Every other packet passes through unchanged. ``pending()`` tells paho's loop that bytes are
ready here even when the socket has none (as ``ssl.SSLSocket.pending`` does).
"""

from __future__ import annotations

import secrets
from typing import Any

OVERSIZED_PREFIX = b"\x00edge-agent-review:oversized:"
_PUBLISH = 3
_CHUNK = 65536


def encode_varint(value: int) -> bytes:
    """MQTT's variable byte integer."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


class PacketGuard:
    """Wraps a connected socket (plain or TLS) for paho's client; see the module docstring."""

    def __init__(self, sock: Any, max_packet_bytes: int, *, mqtt5: bool) -> None:
        self._sock = sock
        self._max = max_packet_bytes
        self._v5 = mqtt5
        self.token = secrets.token_hex(8).encode()
        self.oversized = 0  # packets rewritten
        self.discarded_bytes = 0
        self._out = bytearray()  # bytes for paho
        self._in = bytearray()  # header bytes being collected
        self._step = "fixed"
        self._pass = 0  # bytes of the current packet to pass through unchanged
        self._skip = 0  # bytes of the current packet to throw away
        self._byte0 = 0
        self._remaining = 0
        self._need_topic = 0
        self._topic = b""
        self._packet_id = b""

    @property
    def marker_prefix(self) -> bytes:
        """What a rewritten packet's payload starts with."""
        return OVERSIZED_PREFIX + self.token + b":"

    # ---- the socket interface paho uses ----------------------------------------------------
    def recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes of the (rewritten) stream; b'' at end of stream."""
        while not self._out:
            data = self._sock.recv(_CHUNK)  # BlockingIOError / SSLWantReadError go to paho
            if not data:
                return b""
            self._feed(memoryview(data))
        out = bytes(self._out[:bufsize])
        del self._out[:bufsize]
        return out

    def pending(self) -> int:
        """Bytes ready without reading the socket."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._out) + int(inner)

    def __getattr__(self, name: str) -> Any:  # send, fileno, setblocking, close, ...
        return getattr(self._sock, name)

    # ---- the stream parser ------------------------------------------------------------------
    def _feed(self, data: memoryview) -> None:
        while data:
            if self._skip:
                n = min(self._skip, len(data))
                self._skip -= n
                self.discarded_bytes += n
                data = data[n:]
                if not self._skip:
                    self._step = "fixed"
            elif self._pass:
                n = min(self._pass, len(data))
                self._out += data[:n]
                self._pass -= n
                data = data[n:]
            else:
                data = self._header(data)

    def _collect(self, data: memoryview, size: int) -> memoryview:
        n = min(size - len(self._in), len(data))
        self._in += data[:n]
        return data[n:]

    def _header(self, data: memoryview) -> memoryview:
        """One step of reading a packet's header; returns the bytes not used."""
        if self._step == "fixed":
            return self._fixed_header(data)
        if self._step == "topic_length":
            data = self._collect(data, 2)
            if len(self._in) == 2:
                self._need_topic = int.from_bytes(self._in, "big")
                self._in.clear()
                self._remaining -= 2
                self._step = "topic"
            return data
        if self._step == "topic":
            data = self._collect(data, self._need_topic)
            if len(self._in) == self._need_topic:
                self._topic = bytes(self._in)
                self._in.clear()
                self._remaining -= len(self._topic)
                self._step = "packet_id" if (self._byte0 >> 1) & 3 else self._after_packet_id()
            return data
        if self._step == "packet_id":
            data = self._collect(data, 2)
            if len(self._in) == 2:
                self._packet_id = bytes(self._in)
                self._in.clear()
                self._remaining -= 2
                self._step = self._after_packet_id()
            return data
        # "properties_length": a variable byte integer (MQTT 5)
        self._in += data[:1]
        if self._in[-1] & 0x80 and len(self._in) < 4:
            return data[1:]
        self._remaining -= len(self._in)
        properties = sum((b & 0x7F) << (7 * i) for i, b in enumerate(self._in))
        self._in.clear()
        self._rewrite(max(0, self._remaining - properties))
        return data[1:]

    def _after_packet_id(self) -> str:
        if self._v5:
            return "properties_length"
        self._rewrite(self._remaining)
        return self._step

    def _fixed_header(self, data: memoryview) -> memoryview:
        self._in += data[:1]
        data = data[1:]
        if len(self._in) == 1 or (self._in[-1] & 0x80 and len(self._in) < 5):
            return data
        remaining = sum((b & 0x7F) << (7 * i) for i, b in enumerate(self._in[1:]))
        if self._in[0] >> 4 == _PUBLISH and remaining > self._max:
            self._byte0, self._remaining = self._in[0], remaining
            self._topic = self._packet_id = b""
            self._step = "topic_length"
        else:
            self._out += self._in
            self._pass = remaining
        self._in.clear()
        return data

    def _rewrite(self, payload_size: int) -> None:
        """Hand paho the PUBLISH with a marker payload; throw away what is left of the original."""
        payload = self.marker_prefix + str(payload_size).encode()
        body = len(self._topic).to_bytes(2, "big") + self._topic + self._packet_id
        body += b"\x00" if self._v5 else b""  # no properties
        body += payload
        self._out += bytes([self._byte0]) + encode_varint(len(body)) + body
        self.oversized += 1
        self._skip = self._remaining
        self._step = "skip" if self._skip else "fixed"
