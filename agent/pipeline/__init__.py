"""The capture loop: source -> gate -> detectors -> output stages, on their own threads.

::

    capture thread        inference threads (1 per interpreter)   output thread
    source ▸ gate ──queue──▶  detector 1 ┐                 ┌──▶ reorder ▸ stage 1 ▸ stage 2 ▸ ...
                          ╰▶ detector 2 ┴──queue──────────┘     (alerts, harvest, VoTT, MQTT)

Queues are bounded. A live source (camera, stream) never waits for a slow detector: when
the capture queue is full the oldest frame is dropped and counted. A file source (folder,
video) waits instead, because every frame of a recording matters. With several interpreters
(``detector.interpreters``) successive frames are detected in parallel and put back in capture
order before the output stages, which see every result in order; an error in one stage is
logged and counted, never fatal. ``stop()`` (the CLI calls it on SIGINT/SIGTERM) closes the
source; frames already queued are finished and every stage is closed, so nothing is left
half-written.
"""

from agent.pipeline.contracts import DetectorLike, FrameSourceLike, GateLike, HandledFrame
from agent.pipeline.runner import Pipeline
from agent.pipeline.stats import Counters

__all__ = ["Counters", "DetectorLike", "FrameSourceLike", "GateLike", "HandledFrame", "Pipeline"]
