"""Doctor's camera area: the source opens and gives a frame within the timeout, and is closed again.
The first frame is left in the context: the runtime area times the model on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import Any

from agent.config import AgentConfig
from agent.doctor.checks import Check, CheckFunction, DoctorContext, Status, problem
from agent.errors import UserError
from agent.frames import Frame


def check_source(config: AgentConfig, timeout_s: float) -> tuple[Check, Frame | None]:
    """Open the source and read one frame within ``timeout_s``; the source is closed again."""
    from agent.sources import FrameSource, open_source

    settings = config.source
    outcome: dict[str, Any] = {}
    done = threading.Event()
    started = time.monotonic()

    def read_one() -> None:
        source: FrameSource | None = None
        try:
            source = open_source(settings)
            outcome["source"] = source
            frames = iter(source)
            outcome["frame"] = next(frames, None)
            if isinstance(frames, Generator):
                frames.close()  # ends the iteration, so the source frees its device now
        except Exception as exc:
            outcome["error"] = exc
        finally:
            if source is not None:
                source.close()
            done.set()

    threading.Thread(target=read_one, name="doctor-source", daemon=True).start()
    finished = done.wait(timeout_s)
    elapsed = time.monotonic() - started
    where = settings.redacted_url
    if not finished:
        opened = outcome.get("source")
        if opened is not None:
            opened.close()
        if settings.watch:
            return (
                Check(
                    "source",
                    Status.WARN,
                    f"{where}: no frame within {timeout_s:g} s (watching for new images)",
                ),
                None,
            )
        stage = "opened but gave no frame" if opened is not None else "did not open"
        return (
            problem(
                "source",
                True,
                f"{where} {stage} within {timeout_s:g} s",
                "check the camera is connected / the URL answers (try it in a browser or with ffplay), "
                "or raise --timeout",
            ),
            None,
        )
    error = outcome.get("error")
    if isinstance(error, UserError):
        return problem("source", True, str(error)), None
    if error is not None:
        return problem("source", True, f"{where}: {type(error).__name__}: {error}"), None
    frame: Frame | None = outcome.get("frame")
    if frame is None:
        return (
            problem(
                "source", True, f"{where} opened but has no frames", "put images in the folder or fix the URL"
            ),
            None,
        )
    description = outcome["source"].description
    height, width = frame.image.shape[:2]
    detail = f"{description}: first frame {width}x{height} ({frame.name}) in {elapsed:.2f} s"
    data = {"width": width, "height": height, "seconds": round(elapsed, 3)}
    return Check("source", Status.OK, detail, required=True, data=data), frame


def check_camera(context: DoctorContext) -> list[Check]:
    """The source row; its first frame goes into ``context.frame``."""
    check, context.frame = check_source(context.config, context.options.timeout_s)
    return [check]


CHECKS: list[CheckFunction] = [check_camera]
