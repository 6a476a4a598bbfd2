"""Read what the interpreter does not tell us from a ``.tflite`` file.

A ``.tflite`` file is a FlatBuffer (schema ``tflite/schema.fbs``) optionally followed by a
zip archive (Model Maker / AutoML put ``dict.txt`` there, Ultralytics ``metadata.json``).
We need three things before building an interpreter: the custom operators (an Edge TPU
model holds ``edgetpu-custom-op``; an SSD holds ``TFLite_Detection_PostProcess`` whose
options carry ``num_classes``), and the files in the appended zip. This is a minimal,
read-only FlatBuffer walker for exactly those fields.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field
from typing import Any

from agent.errors import UserError

# Field numbers in tflite/schema.fbs.
_MODEL_OPERATOR_CODES = 1
_MODEL_SUBGRAPHS = 2
_OPCODE_CUSTOM_CODE = 1
_SUBGRAPH_OPERATORS = 3
_OPERATOR_OPCODE_INDEX = 0
_OPERATOR_CUSTOM_OPTIONS = 5

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
SSD_POSTPROCESS_OP = "TFLite_Detection_PostProcess"


@dataclass
class TfliteFileInfo:
    """What ``read_tflite_file`` found: custom op names, SSD postprocess options, zip members."""

    custom_ops: set[str] = field(default_factory=set)
    postprocess_options: dict[str, Any] | None = None
    embedded_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def is_edgetpu(self) -> bool:
        """True for a model compiled for the Edge TPU."""
        return EDGETPU_CUSTOM_OP in self.custom_ops


class _Buffer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def u8(self, pos: int) -> int:
        return self.data[pos]

    def u16(self, pos: int) -> int:
        return int(struct.unpack_from("<H", self.data, pos)[0])

    def u32(self, pos: int) -> int:
        return int(struct.unpack_from("<I", self.data, pos)[0])

    def i32(self, pos: int) -> int:
        return int(struct.unpack_from("<i", self.data, pos)[0])

    def field_pos(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, None when absent."""
        vtable = table - self.i32(table)
        vtable_size = self.u16(vtable)
        slot = 4 + 2 * index
        if slot >= vtable_size:
            return None
        offset = self.u16(vtable + slot)
        return table + offset if offset else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int] | None:
        """(first element position, length) of a vector field."""
        pos = self.field_pos(table, index)
        if pos is None:
            return None
        start = self.deref(pos)
        return start + 4, self.u32(start)

    def tables(self, table: int, index: int) -> list[int]:
        vec = self.vector(table, index)
        if vec is None:
            return []
        first, length = vec
        return [self.deref(first + 4 * i) for i in range(length)]

    def string(self, table: int, index: int) -> str | None:
        vec = self.vector(table, index)
        if vec is None:
            return None
        first, length = vec
        return self.data[first : first + length].decode("utf-8", "replace")

    def bytes_field(self, table: int, index: int) -> bytes | None:
        vec = self.vector(table, index)
        if vec is None:
            return None
        first, length = vec
        return self.data[first : first + length]

    def scalar_u32(self, table: int, index: int, default: int = 0) -> int:
        pos = self.field_pos(table, index)
        return default if pos is None else self.u32(pos)


def _embedded_files(data: bytes) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return {
                name: archive.read(name)
                for name in archive.namelist()
                if not name.endswith("/") and archive.getinfo(name).file_size < 4_000_000
            }
    except (zipfile.BadZipFile, OSError, ValueError):
        return {}


def _decode_flexbuffer(raw: bytes) -> dict[str, Any] | None:
    try:
        from flatbuffers import flexbuffers

        value = flexbuffers.Loads(raw)
    except Exception:  # options we cannot read only disable a consistency check
        return None
    return dict(value) if isinstance(value, dict) else None


def parse_tflite(data: bytes, name: str = "model") -> TfliteFileInfo:
    """Parse the bytes of a ``.tflite`` file; raises ``UserError`` when it is not one."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(
            f"{name} is not a TensorFlow Lite model (no 'TFL3' identifier); "
            "point detector.model at a .tflite file"
        )
    buf = _Buffer(data)
    info = TfliteFileInfo(embedded_files=_embedded_files(data))
    try:
        root = buf.u32(0)
        codes = [buf.string(code, _OPCODE_CUSTOM_CODE) for code in buf.tables(root, _MODEL_OPERATOR_CODES)]
        info.custom_ops = {c for c in codes if c}
        for subgraph in buf.tables(root, _MODEL_SUBGRAPHS):
            for op in buf.tables(subgraph, _SUBGRAPH_OPERATORS):
                index = buf.scalar_u32(op, _OPERATOR_OPCODE_INDEX)
                if index < len(codes) and codes[index] == SSD_POSTPROCESS_OP:
                    raw = buf.bytes_field(op, _OPERATOR_CUSTOM_OPTIONS)
                    if raw:
                        info.postprocess_options = _decode_flexbuffer(raw)
    except (struct.error, IndexError) as exc:
        raise UserError(
            f"{name} is a damaged TensorFlow Lite file ({exc}); download or export it again"
        ) from None
    return info


def read_tflite_file(path: str) -> TfliteFileInfo:
    """Read and parse the ``.tflite`` file at ``path``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UserError(f"cannot read model {path}: {exc.strerror}; check detector.model") from None
    return parse_tflite(data, path)
