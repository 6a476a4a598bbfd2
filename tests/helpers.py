"""Small helpers shared by test files: run the CLI, match detections."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

from agent.boxes import iou_matrix

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    """What a CLI run printed and returned."""

    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def error_line(self) -> str:
        """The one ``edge-agent: error: ...`` line on stderr (asserts there is exactly one), without
        that prefix."""
        lines = [line for line in self.err.splitlines() if line.startswith("edge-agent: error: ")]
        assert len(lines) == 1, self.err
        return lines[0].removeprefix("edge-agent: error: ")


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None
) -> CliResult:
    """Run ``edge-agent ARGS`` in a fresh Python process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def match_detections(
    got: list[dict[str, Any]],
    expected: list[dict[str, Any]],
    *,
    min_iou: float = 0.9,
    score_tol: float = 0.02,
    threshold: float = 0.0,
) -> list[str]:
    """Problems found matching ``got`` to ``expected`` by the rule in ../shared/models/README.md:
    every expected detection has one of ours with the same label, IoU >= ``min_iou`` (against
    its box or a tied alternative) and a score within ``score_tol``; we have no extra detection
    above ``threshold``. An empty list means they match."""
    problems = []
    used: set[int] = set()
    for ref in expected:
        boxes = [ref["box_xyxy"], *ref.get("tied_alternatives_xyxy", [])]
        found = None
        for j, mine in enumerate(got):
            if j in used or mine["label"] != ref["label"] or abs(mine["score"] - ref["score"]) > score_tol:
                continue
            if float(iou_matrix([mine["box_xyxy"]], boxes).max()) >= min_iou:
                found = j
                break
        if found is None:
            problems.append(f"missing {ref['label']} {ref['score']} {ref['box_xyxy']}")
        else:
            used.add(found)
    for j, mine in enumerate(got):
        if j not in used and mine["score"] > threshold:
            problems.append(f"extra {mine['label']} {mine['score']} {mine['box_xyxy']}")
    return problems


def validate_vott(shared: Path, target: Path, frames: Path) -> subprocess.CompletedProcess[str]:
    """Run ../shared/vott/validate_vott.py on a VoTT target folder with its frames folder."""
    return subprocess.run(
        [
            sys.executable,
            str(shared / "vott" / "validate_vott.py"),
            str(target),
            "--source-folder",
            str(frames),
        ],
        capture_output=True,
        text=True,
    )


def outbox_topics(outbox_file: Path) -> list[str]:
    """The topics of the messages waiting in an agent's MQTT outbox, in sending order."""
    from agent.mqtt.outbox import Outbox

    box = Outbox(str(outbox_file), max_bytes=10**12, max_age_s=10**9)
    try:
        return [m.message.topic for m in box.take(100000)]
    finally:
        box.close()


def load_validator(shared: Path) -> ModuleType:
    """../shared/vott/validate_vott.py imported as a module (its reference id and crypto functions)."""
    spec = importlib.util.spec_from_file_location("validate_vott", shared / "vott" / "validate_vott.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zero_weight_buffers(source: Path, target: Path, min_bytes: int = 256) -> int:
    """Copy the ``.tflite`` model at ``source`` to ``target`` with every constant buffer of at least
    ``min_bytes`` bytes (the weights; the small ones are shapes and short biases) set to zeros: a
    real model that loads and runs but computes nothing sensible. Returns the bytes zeroed."""
    data = bytearray(source.read_bytes())

    def u32(pos: int) -> int:
        return int(struct.unpack_from("<I", data, pos)[0])

    def field(table: int, index: int) -> int | None:  # FlatBuffer table field position
        vtable = table - int(struct.unpack_from("<i", data, table)[0])
        slot = 4 + 2 * index
        if slot >= int(struct.unpack_from("<H", data, vtable)[0]):
            return None
        offset = int(struct.unpack_from("<H", data, vtable + slot)[0])
        return table + offset if offset else None

    model_buffers = field(u32(0), 4)  # tflite/schema.fbs: Model.buffers is field 4
    assert model_buffers is not None, f"{source} has no buffers"
    vector = model_buffers + u32(model_buffers)
    zeroed = 0
    for i in range(u32(vector)):
        element = vector + 4 + 4 * i
        buffer_data = field(element + u32(element), 0)  # Buffer.data
        if buffer_data is None:
            continue
        start = buffer_data + u32(buffer_data)
        length = u32(start)
        if length >= min_bytes:
            data[start + 4 : start + 4 + length] = bytes(length)
            zeroed += length
    target.write_bytes(bytes(data))
    return zeroed


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` every 50 ms until it holds or ``timeout_s`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def serve_on_loopback(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """A real HTTP server on a free loopback port, serving ``handler`` from a daemon thread (one
    thread a request); the server (``shutdown()`` it) and its base URL, ``http://127.0.0.1:PORT``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
