"""HTTP webcams: MJPEG streams and snapshot URLs, served by real HTTP servers on 127.0.0.1 that
stand in for mjpg-streamer / crowsnest / OctoPrint's webcam endpoints."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np
import pytest

from agent.errors import ConfigError, UserError
from agent.sources import SourceSettings, open_source
from agent.sources.mjpeg import MultipartReader, StreamError

pytestmark = pytest.mark.timeout(120)

WAIT_S = 30.0  # generous upper bound for anything to happen; never a timing assertion
FAST_RETRY = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2}


def jpeg(bgr: tuple[int, int, int]) -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), bgr, np.uint8))
    assert ok
    return data.tobytes()


RED, GREEN, BLUE = jpeg((0, 0, 255)), jpeg((0, 255, 0)), jpeg((255, 0, 0))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


class CameraServer:
    """A real HTTP server on 127.0.0.1; ``respond(handler, n)`` answers the n-th request (1-based)."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler, int], None]) -> None:
        self.respond = respond
        self.stop = threading.Event()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with outer._lock:
                    outer.requests.append((self.path, dict(self.headers)))
                    n = len(outer.requests)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    outer.respond(self, n)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.requests)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> CameraServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


def start_stream(handler: BaseHTTPRequestHandler, boundary: str | None = "frame") -> None:
    handler.send_response(200)
    content_type = "multipart/x-mixed-replace" + (f";boundary={boundary}" if boundary else "")
    handler.send_header("Content-Type", content_type)
    handler.send_header("Cache-Control", "no-store")
    handler.end_headers()


def write_part(
    handler: BaseHTTPRequestHandler,
    data: bytes,
    *,
    delimiter: bytes = b"--frame",
    content_length: bool = True,
    declared_length: int | None = None,
) -> None:
    head = delimiter + b"\r\nContent-Type: image/jpeg\r\n"
    if content_length:
        head += f"Content-Length: {declared_length or len(data)}\r\n".encode()
    handler.wfile.write(head + b"\r\n" + data + b"\r\n")
    handler.wfile.flush()


def stream_forever(handler: BaseHTTPRequestHandler, server: CameraServer, parts: list[bytes], **kw) -> None:
    while not server.stop.is_set():
        for part in parts:
            write_part(handler, part, **kw)
            time.sleep(0.02)


def send_image(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def mean_bgr(image: np.ndarray) -> tuple[int, ...]:
    return tuple(round(float(v)) for v in image.reshape(-1, 3).mean(axis=0))


# --- the multipart parser on its own --------------------------------------------------------


def test_parser_reads_parts_with_and_without_content_length():
    body = (
        b"preamble\r\n"
        b"--b\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc\r\n"
        b"--b\r\nContent-Type: image/jpeg\r\n\r\nline1\nline2\r\n\r\n"
        b"--b\r\n\r\nxyz\r\n"
        b"--b--\r\n"
    )
    reader = MultipartReader(io.BufferedReader(io.BytesIO(body)), "b", max_part_bytes=1000)
    assert reader.next_part() == b"abc"
    assert reader.next_part() == b"line1\nline2\r\n"
    assert reader.next_part() == b"xyz"
    with pytest.raises(EOFError):
        reader.next_part()


def test_parser_refuses_truncated_and_oversized_parts():
    cut = b"--b\r\nContent-Length: 100\r\n\r\nonly a few bytes"
    with pytest.raises(StreamError, match="ended inside a part"):
        MultipartReader(io.BufferedReader(io.BytesIO(cut)), "b", 1000).next_part()
    big = b"--b\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    with pytest.raises(StreamError, match="max_frame_mb"):
        MultipartReader(io.BufferedReader(io.BytesIO(big)), "b", 1000).next_part()
    unbounded = b"--b\r\n\r\n" + b"y" * 5000
    with pytest.raises(StreamError, match="max_frame_mb"):
        MultipartReader(io.BufferedReader(io.BytesIO(unbounded)), "b", 1000).next_part()


# --- MJPEG streams ----------------------------------------------------------------------------


def test_mjpeg_stream_yields_frames_with_the_original_bytes():
    with CameraServer(
        lambda h, n: (start_stream(h), stream_forever(h, server, [RED, GREEN, BLUE]))
    ) as server:
        url = server.url("/webcam/?action=stream")
        with open_source(SourceSettings(url=url)) as source:
            assert source.kind == "mjpeg"
            assert source.live is True
            frames = list(itertools.islice(source, 5))
            stats = source.stats()
    port = server.server.server_address[1]
    assert [f.sequence for f in frames] == [0, 1, 2, 3, 4]
    for frame in frames:
        assert frame.encoded in (RED, GREEN, BLUE)
        assert frame.encoded_format == "jpg"
        expected = {RED: (0, 0, 255), GREEN: (0, 255, 0), BLUE: (255, 0, 0)}[frame.encoded]
        assert np.abs(np.array(mean_bgr(frame.image)) - expected).max() <= 3
        assert frame.source_id == f"127.0.0.1_{port}_webcam"
        assert frame.origin == url
        assert frame.timestamp > 1.6e9  # wall clock, seconds since the epoch
        assert frame.name.endswith(f"-{frame.sequence:06d}")
    assert stats["frames"] == 5


@pytest.mark.parametrize(
    ("boundary_param", "delimiter", "content_length"),
    [
        ("frame", b"--frame", False),  # body runs to the next delimiter
        ("--myboundary", b"--myboundary", True),  # dashes inside the parameter (common in cameras)
        ("--myboundary", b"--myboundary", False),
        (None, b"--learnt", False),  # no boundary parameter at all: learnt from the stream
    ],
)
def test_mjpeg_boundary_variants(boundary_param, delimiter, content_length):
    def respond(handler, n):
        start_stream(handler, boundary_param)
        stream_forever(handler, server, [RED, GREEN], delimiter=delimiter, content_length=content_length)

    with (
        CameraServer(respond) as server,
        open_source(SourceSettings(url=server.url("/?action=stream"))) as source,
    ):
        frames = list(itertools.islice(source, 4))
        assert source.stats()["corrupt_skipped"] == 0
    assert all(frame.encoded in (RED, GREEN) for frame in frames)


def test_mjpeg_reconnects_after_the_connection_drops_mid_part():
    def respond(handler, n):
        if n == 1:
            start_stream(handler)
            write_part(handler, RED)
            write_part(handler, GREEN)
            half = BLUE[: len(BLUE) // 2]
            handler.wfile.write(b"--frame\r\nContent-Length: %d\r\n\r\n" % len(BLUE) + half)
            handler.wfile.flush()
            return  # the server closes the connection in the middle of the part
        if n == 2:
            handler.send_error(503, "camera restarting")
            return
        start_stream(handler)
        stream_forever(handler, server, [BLUE, RED])

    with CameraServer(respond) as server:
        settings = SourceSettings(url=server.url("/webcam/?action=stream"), **FAST_RETRY)
        with open_source(settings) as source:
            frames = list(itertools.islice(source, 6))
            stats = source.stats()
        assert server.count >= 3
    assert len(frames) == 6
    assert all(frame.encoded in (RED, GREEN, BLUE) for frame in frames)  # never the half part
    assert any(frame.encoded == BLUE for frame in frames)  # frames from after the reconnect
    assert stats["reconnects"] >= 1
    assert stats["errors"] >= 2  # the drop and the 503
    assert stats["corrupt_skipped"] == 0


@pytest.mark.parametrize(
    "bad", [b"\xff\xd8garbage" * 40, BLUE[: len(BLUE) * 2 // 3]], ids=["garbage", "truncated"]
)
def test_mjpeg_corrupt_part_is_skipped_and_counted(bad, caplog):
    gate = threading.Event()
    shared: dict[str, object] = {}

    def respond(handler, n):
        start_stream(handler)
        write_part(handler, RED)
        gate.wait(WAIT_S)
        write_part(handler, bad)
        wait_until(lambda: shared["source"].stats()["corrupt_skipped"] >= 1, "the corrupt part to be counted")
        stream_forever(handler, server, [GREEN])

    caplog.set_level(logging.WARNING)
    with (
        CameraServer(respond) as server,
        open_source(SourceSettings(url=server.url("/?action=stream"))) as source,
    ):
        shared["source"] = source
        frames = iter(source)
        assert next(frames).encoded == RED
        gate.set()
        assert next(frames).encoded == GREEN
        assert source.stats()["corrupt_skipped"] == 1
    assert "corrupt" in caplog.text
    assert "Traceback" not in caplog.text


def test_mjpeg_keeps_only_the_newest_frame_when_the_consumer_is_slow():
    parts = [jpeg((10 * i, 10 * i, 10 * i)) for i in range(10)]
    gate = threading.Event()

    def respond(handler, n):
        start_stream(handler)
        write_part(handler, parts[0])
        gate.wait(WAIT_S)
        for part in parts[1:]:
            write_part(handler, part)
        server.stop.wait(WAIT_S)

    with (
        CameraServer(respond) as server,
        open_source(SourceSettings(url=server.url("/?action=stream"))) as source,
    ):
        frames = iter(source)
        assert next(frames).encoded == parts[0]
        gate.set()  # nine parts arrive while nobody takes frames
        wait_until(lambda: source.stats()["dropped"] >= 8, "the reader to receive all parts")
        assert next(frames).encoded == parts[9]
        assert source.stats()["dropped"] == 8


def test_mjpeg_credentials_come_from_env_and_file_and_stay_out_of_logs(tmp_path, monkeypatch, caplog):
    password_file = tmp_path / "cam.pass"
    password_file.write_text("pa55word\n")
    basic = "Basic " + base64.b64encode(b"viewer:pa55word").decode()

    def respond(handler, n):
        if handler.headers.get("X-Api-Key") != "s3cret-key" or handler.headers.get("Authorization") != basic:
            handler.send_error(403)
            return
        start_stream(handler)
        stream_forever(handler, server, [RED])

    monkeypatch.setenv("OCTOPRINT_KEY", "s3cret-key")
    caplog.set_level(logging.DEBUG)
    with CameraServer(respond) as server:
        settings = SourceSettings(
            url=server.url("/webcam/?action=stream"),
            api_key_env="OCTOPRINT_KEY",
            username="viewer",
            password_file=str(password_file),
        )
        with open_source(settings) as source:
            assert next(iter(source)).encoded == RED
    assert "s3cret-key" not in caplog.text
    assert "pa55word" not in caplog.text


def test_mjpeg_refused_credentials_fail_at_once_with_the_fix():
    with CameraServer(lambda h, n: h.send_error(403)) as server:
        settings = SourceSettings(url=server.url("/webcam/?action=stream"), startup_attempts=5, **FAST_RETRY)
        with pytest.raises(UserError) as info:
            open_source(settings)
        assert server.count == 1  # retrying cannot help
    assert "403" in str(info.value)
    assert "api_key_env" in str(info.value)
    assert info.value.exit_code == 1


def test_missing_api_key_variable_is_a_config_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    settings = SourceSettings(url="http://127.0.0.1:9/webcam/?action=stream", api_key_env="NO_SUCH_KEY_VAR")
    with pytest.raises(ConfigError) as info:
        open_source(settings)
    assert "NO_SUCH_KEY_VAR" in str(info.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("path", ["/webcam/?action=stream", "/webcam/?action=snapshot", "/camera"])
def test_connection_refused_at_start_gives_up_after_startup_attempts(path):
    url = f"http://127.0.0.1:{free_port()}{path}"
    settings = SourceSettings(url=url, startup_attempts=3, reconnect_initial_s=0.01, reconnect_max_s=0.02)
    with pytest.raises(UserError) as info:
        open_source(settings)
    message = str(info.value)
    assert "connection refused" in message
    assert "after 3 attempts" in message
    assert url in message
    assert "startup_attempts" in message
    assert info.value.exit_code == 1


def test_close_from_another_thread_ends_iteration_and_the_reader():
    def respond(handler, n):
        start_stream(handler)
        write_part(handler, RED)
        server.stop.wait(WAIT_S)  # then the stream stalls

    with CameraServer(respond) as server:
        source = open_source(SourceSettings(url=server.url("/?action=stream"), id="stalled"))
        got: list[bytes | None] = []
        consumer = threading.Thread(target=lambda: got.extend(f.encoded for f in source), daemon=True)
        consumer.start()
        wait_until(lambda: len(got) == 1, "the first frame")
        source.close()
        consumer.join(WAIT_S)
        assert not consumer.is_alive()
        wait_until(lambda: not any(t.name == "mjpeg-stalled" for t in threading.enumerate()), "the reader")
    assert got == [RED]


def test_auto_kind_probes_http_urls():
    def respond(handler, n):
        if handler.path == "/image":
            send_image(handler, GREEN)
            return
        start_stream(handler)
        stream_forever(handler, server, [RED])

    with CameraServer(respond) as server:
        with open_source(SourceSettings(url=server.url("/video"))) as source:
            assert source.kind == "mjpeg"
            assert next(iter(source)).encoded == RED
        with open_source(SourceSettings(url=server.url("/image"), interval_s=0.01)) as source:
            assert source.kind == "snapshot"
            assert next(iter(source)).encoded == GREEN


def test_auto_kind_refuses_a_web_page():
    def respond(handler, n):
        body = b"<html>OctoPrint</html>"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with CameraServer(respond) as server, pytest.raises(UserError) as info:
        open_source(SourceSettings(url=server.url("/")))
    assert "text/html" in str(info.value)
    assert "?action=stream" in str(info.value)


# --- snapshot URLs ------------------------------------------------------------------------------


def test_snapshot_polls_and_recovers_from_errors():
    images = [RED, GREEN, BLUE, RED]
    served: list[bytes] = []

    def respond(handler, n):
        if n == 2:
            handler.send_error(503, "webcam busy")
            return
        served.append(images[len(served)])
        send_image(handler, served[-1])

    with CameraServer(respond) as server:
        settings = SourceSettings(url=server.url("/webcam/?action=snapshot"), interval_s=0.01, **FAST_RETRY)
        with open_source(settings) as source:
            assert source.kind == "snapshot"
            frames = list(itertools.islice(source, 3))
            stats = source.stats()
        assert all(path == "/webcam/?action=snapshot" for path, _ in server.requests)
    assert [f.encoded for f in frames] == [RED, GREEN, BLUE]
    assert [f.sequence for f in frames] == [0, 1, 2]
    assert stats["errors"] == 1
    assert stats["reconnects"] == 1
    assert np.abs(np.array(mean_bgr(frames[2].image)) - (255, 0, 0)).max() <= 3


def test_snapshot_that_is_a_stream_says_so():
    def respond(handler, n):
        start_stream(handler)
        write_part(handler, RED)

    with CameraServer(respond) as server, pytest.raises(UserError) as info:
        open_source(SourceSettings(url=server.url("/snapshot"), kind="snapshot"))
    assert "kind: mjpeg" in str(info.value)
