"""What the bench runs the agent on: frames cut from real photos, and a throw-away Mosquitto.

Frames are made from ``../shared/models/images`` and ``../shared/models/print3d/images`` (each
frame a different crop of one of them, resized and saved as JPEG quality 90) and cached in the
work folder; without ``../shared`` a synthetic pattern is used.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ----------------------------------------------------------------------------------------- frames


def source_images(shared: Path) -> list[NDArray[np.uint8]]:
    """The pictures frames are cut from: the shared photos and printer frames, else a pattern."""
    paths = sorted((shared / "models" / "images").glob("*")) + sorted(
        (shared / "models" / "print3d" / "images").glob("*.jpg")
    )
    images = [img for img in (read_bgr(p) for p in paths) if img is not None]
    if images:
        return images
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (45, 80, 3), dtype=np.uint8), (1280, 720))
    return [np.asarray(cv2.GaussianBlur(base, (0, 0), 3), dtype=np.uint8)]


def read_bgr(path: Path) -> NDArray[np.uint8] | None:
    """An image file as BGR uint8, or None when OpenCV cannot read it."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, dtype=np.uint8)


def parse_size(text: str) -> tuple[int, int]:
    """``"640x480"`` -> ``(640, 480)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bench: size {text!r} must look like 640x480") from None
    if w < 32 or h < 32:
        raise SystemExit(f"bench: size {text!r} is too small")
    return w, h


def make_frames(
    folder: Path, images: Sequence[NDArray[np.uint8]], width: int, height: int, count: int, quality: int = 90
) -> list[Path]:
    """``count`` different JPEG frames of ``width`` x ``height`` in ``folder`` (reused when already
    there): frame i is a crop (85-100 % of the area, position varying) of image ``i % len(images)``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".complete"
    wanted = [folder / f"frame_{i:05d}.jpg" for i in range(count)]
    if stamp.exists() and stamp.read_text() == f"{count} {quality}" and all(p.exists() for p in wanted):
        return wanted
    for old in folder.glob("frame_*.jpg"):
        old.unlink()
    rng = np.random.default_rng(count * 7919 + width)
    for i, path in enumerate(wanted):
        img = images[i % len(images)]
        h, w = img.shape[:2]
        # crop to the target aspect ratio, 85-100 % of the largest such crop, at a random place
        aspect = width / height
        cw, ch = (w, round(w / aspect)) if w / h < aspect else (round(h * aspect), h)
        f = float(rng.uniform(0.85, 1.0))
        cw, ch = max(8, int(cw * f)), max(8, int(ch * f))
        x = int(rng.integers(0, w - cw + 1))
        y = int(rng.integers(0, h - ch + 1))
        frame = cv2.resize(img[y : y + ch, x : x + cw], (width, height), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV cannot encode JPEG")
        path.write_bytes(buf.tobytes())
    stamp.write_text(f"{count} {quality}")
    return wanted


# ----------------------------------------------------------------------------------------- broker


def mosquitto_binary() -> str | None:
    """Path of the Mosquitto broker, or None when it is not installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A throw-away Mosquitto on 127.0.0.1 (no persistence, anonymous), for the duration of a bench."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self.folder / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def version(self) -> str:
        """``mosquitto version 2.0.11`` or similar."""
        out = subprocess.run([self.binary, "-h"], capture_output=True, text=True, check=False)
        first = (out.stdout or out.stderr).splitlines()
        return first[0].strip() if first else "mosquitto"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until the port accepts connections."""
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.folder,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}; see {self.folder}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout_s} s")

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the broker has used so far (0 when unknown)."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def maybe_broker(enabled: bool, folder: Path) -> Iterator[Broker | None]:
    """A started broker when ``enabled`` and Mosquitto is installed, else None (said on stderr)."""
    if not enabled:
        yield None
        return
    binary = mosquitto_binary()
    if binary is None:
        print(
            "bench: Mosquitto is not installed (apt-get install mosquitto); benching with the outbox only "
            "(messages wait on disk, none is sent)",
            file=sys.stderr,
        )
        yield None
        return
    broker = Broker(binary, folder)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
