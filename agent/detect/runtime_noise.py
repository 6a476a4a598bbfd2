"""Keep the TFLite runtimes' own chatter off the user's terminal.

LiteRT's C++ runtime prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.`` straight on
file descriptor 2 for every interpreter it builds, whatever the Python logging level, and
``TF_CPP_MIN_LOG_LEVEL`` does not reach it (measured: ai-edge-litert prints it at levels 0-3;
tflite-runtime prints nothing). ``native_stderr_to_log()`` points fd 2 at a pipe while an
interpreter is built; a thread passes the runtime's ``INFO:`` lines to this module's logger at DEBUG
(``--log-level DEBUG`` shows them) and every other line on to stderr as it comes, so a warning, or
a line another thread writes meanwhile, is never lost.

``load_delegate_quietly()``: when the Edge TPU library does not load, the runtimes' ``Delegate``
raises from its constructor and its half-built object later fails in ``__del__``
(``Exception ignored in ... AttributeError: ... '_library'``) after our own message; that one
known noise is dropped, any other unraisable error still reaches Python's hook.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

_fd2_lock = threading.Lock()  # one redirection at a time, process-wide
RUNTIME_INFO_PREFIX = "INFO: "


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """While the block runs, fd 2 is a pipe read line by line by a helper thread: the runtime's
    ``INFO:`` lines go to the log at DEBUG, every other line straight on to the real stderr (so a
    block that hangs holds nothing back)."""
    with _fd2_lock:
        sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a daemon started with fd 2 closed): nothing to keep clean
            yield
            return
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        forwarder = threading.Thread(
            target=_forward, args=(read_end, saved), name="stderr-filter", daemon=True
        )
        forwarder.start()
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)  # the pipe's last writer is gone: the forwarder reads to its end
            forwarder.join(timeout=5.0)
            os.close(saved)


def _forward(read_end: int, stderr_fd: int) -> None:
    with os.fdopen(read_end, "rb") as pipe:
        for line in pipe:
            if line.startswith(RUNTIME_INFO_PREFIX.encode()):
                log.debug("%s", line.decode("utf-8", errors="replace").rstrip())
            else:
                os.write(stderr_fd, line)


def _is_delegate_noise(unraisable: Any) -> bool:
    return isinstance(unraisable.exc_value, AttributeError) and "Delegate.__del__" in repr(unraisable.object)


def load_delegate_quietly(
    load_delegate: Callable[..., Any], library: str, options: dict[str, str]
) -> tuple[Any | None, str | None]:
    """``(delegate, None)``, or ``(None, why)`` when ``load_delegate(library, options)`` fails
    (``ValueError``, ``OSError``, ``RuntimeError``), without the half-built delegate's noise."""
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not _is_delegate_noise(unraisable):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        try:
            return load_delegate(library, options), None
        except (ValueError, OSError, RuntimeError) as exc:
            why = str(exc)
        gc.collect()  # the failed constructor's frame, and its half-built Delegate, go now
        return None, why
    finally:
        sys.unraisablehook = previous
