"""How the output stages talk: each receives the immutable ``FrameResult`` and the typed outputs of
the stages before it, and returns its own; news between components travels as events.

A stage declares what it ``needs`` (outputs an earlier stage must produce), what it ``uses`` when
present (alerts, say, which only exist with alerts on), what it ``produces`` and which events it
``listens`` to. ``check_stage_order`` refuses, when the agent is built, a list of stages in which a
stage would read an output that no earlier stage produces. Everything runs on the pipeline's
output thread: events posted from other threads (the MQTT sender's "this frame reached the
broker") wait in the ``EventBus`` until the output thread delivers them, so no component ever
calls into another under its own lock.
"""

from __future__ import annotations

import queue
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.frames import FrameResult

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FrameSynced:
    """Event: the broker acknowledged a kept frame's picture (posted by the MQTT sender)."""

    frame_id: str


class Outputs:
    """What the stages before this one made of the current frame, by output type."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[type, object] = {}

    def get(self, kind: type[T]) -> T:
        """The output of type ``kind`` (a stage that ``needs`` it always finds it)."""
        return self._values[kind]  # type: ignore[return-value]

    def find(self, kind: type[T]) -> T | None:
        """The output of type ``kind``, or None when no stage produces it."""
        return self._values.get(kind)  # type: ignore[return-value]

    def add(self, value: object) -> None:
        """Record a stage's output (the pipeline does this)."""
        self._values[type(value)] = value


class Stage:
    """An output stage: sees every result, in capture order, on the output thread.

    Subclasses set ``name`` and the type declarations and override ``handle``; the other hooks
    are optional."""

    name: str = "stage"
    needs: tuple[type, ...] = ()
    uses: tuple[type, ...] = ()
    produces: type | None = None
    listens: tuple[type, ...] = ()

    def handle(self, result: FrameResult, outputs: Outputs) -> object | None:
        """Act on one result; return the ``produces`` output (or None when it produces nothing)."""
        raise NotImplementedError

    def on_event(self, event: object) -> None:
        """Handle an event of one of the ``listens`` types."""

    def tick(self) -> None:
        """Called on the output thread when no result came for a while (about every 0.2 s): do
        the periodic work a slow source would otherwise hold back (saving, flushing)."""

    def close(self) -> None:
        """Flush and release everything; called once after the last result."""

    def stats(self) -> Mapping[str, Any]:
        """Counters for the stats message."""
        return {}


def check_stage_order(stages: Sequence[Stage]) -> None:
    """Raise ``ValueError`` when a stage needs an output no earlier stage produces, uses one that a
    later stage produces, or two stages produce the same type (a mistake in how the agent is
    built, found before any frame)."""
    produced_by: dict[type, str] = {}
    for stage in stages:
        if stage.produces is not None:
            if stage.produces in produced_by:
                raise ValueError(
                    f"stages {produced_by[stage.produces]} and {stage.name} both produce "
                    f"{stage.produces.__name__}"
                )
            produced_by[stage.produces] = stage.name
    seen: set[type] = set()
    for stage in stages:
        for kind in stage.needs:
            if kind not in seen:
                raise ValueError(f"stage {stage.name} needs {kind.__name__}, which no earlier stage produces")
        for kind in stage.uses:
            if kind in produced_by and kind not in seen:
                raise ValueError(
                    f"stage {stage.name} uses {kind.__name__}, produced by {produced_by[kind]} after it"
                )
        if stage.produces is not None:
            seen.add(stage.produces)


class EventBus:
    """Events posted from any thread, delivered on the output thread to the stages listening."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    def post(self, event: object) -> None:
        """Queue ``event`` for delivery (thread-safe, never blocks)."""
        self._queue.put(event)

    def deliver(self, stages: Iterable[Stage]) -> int:
        """Hand every queued event to the stages whose ``listens`` holds its type (output thread
        only); events posted while delivering are delivered too. Returns how many."""
        listeners = [(stage, stage.listens) for stage in stages if stage.listens]
        delivered = 0
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return delivered
            delivered += 1
            for stage, kinds in listeners:
                if isinstance(event, kinds):
                    stage.on_event(event)
