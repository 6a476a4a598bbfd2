"""The known-answer check: does the model, on this runtime, delegate and CPU, still see what it should?

After the detector's warm-up, ``check_known_answer(detector, data_dir=...)`` runs the model once on a
known frame, decodes at a low score threshold (so outputs that collapse to zeros or turn to noise
show), and compares with the model's known detections (``agent.detect.known_answers_file``):

- answers shipped beside the model (``<stem>.answers.json``; the bundled model has them) for the
  most specific entry that fits this runtime and machine;
- else answers this machine recorded (``<stem>.answers.recorded.json`` beside the model's card, or
  in ``<data_dir>/known-answers/`` for a model without a card or whose folder cannot be written):
  compared when the runtime or delegate version changed since, recorded now when the model never
  ran here with this runtime and delegate.

A difference beyond the file's tolerance raises ``UserError`` (one line: runtime and version,
delegate, machine and CPU, and what differs), or with ``allow_drift`` logs it as a warning.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2

from agent import __version__
from agent.detect.answer_compare import Comparison, compare_answers
from agent.detect.known_answers_file import (
    ANY,
    BUNDLED,
    DEFAULT_FRAME,
    RECORDED_SUFFIX,
    SHIPPED_SUFFIX,
    Answer,
    AnswerEntry,
    DecodeSettings,
    FrameRef,
    KnownAnswers,
    ModelRef,
    Platform,
    Recorded,
    frame_path,
    load_answers,
    save_answers,
    select_entry,
)
from agent.detect.platform_facts import platform_facts
from agent.errors import UserError
from agent.fsutil import file_sha256
from agent.utc import utc_iso

if TYPE_CHECKING:
    from agent.detect.detector import Detector

log = logging.getLogger(__name__)

Status = Literal["ok", "drift", "recorded", "unchecked"]
Source = Literal["shipped", "recorded"]
RECORDED_FOLDER = "known-answers"


@dataclass
class KnownAnswerResult:
    """How the check came out: ``ok``, ``drift`` (different beyond the tolerance), ``recorded`` (the
    first run here: nothing to compare with yet) or ``unchecked`` (it could not run, see ``detail``)."""

    status: Status
    model: str
    platform: Platform
    detail: str
    source: Source | None = None
    answers_file: Path | None = None
    frame: str | None = None
    compared_with: AnswerEntry | None = None
    comparison: Comparison | None = None
    got: list[Answer] = field(default_factory=list)  # the detections now
    elapsed_ms: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready facts for the stats message and ``doctor --json``."""
        out: dict[str, Any] = {
            "status": self.status,
            "detail": self.detail,
            "source": self.source,
            "answers_file": str(self.answers_file) if self.answers_file else None,
            "frame": self.frame,
            "runtime": self.platform.runtime,
            "runtime_version": self.platform.runtime_version,
            "delegate": self.platform.delegate,
            "delegate_version": self.platform.delegate_version,
            "machine": self.platform.machine,
            "cpu": self.platform.cpu,
            "elapsed_ms": round(self.elapsed_ms, 2),
        }
        if self.compared_with is not None:
            out["compared_with"] = self.compared_with.recorded.model_dump(exclude_none=True)
        if self.comparison is not None:
            out["comparison"] = self.comparison.summary()
        else:
            out["now"] = [a.model_dump() for a in self.got[:20]]
        return out

    def attach(self, detector: Detector) -> Detector:
        """``detector`` with this result in its ``describe()`` (and so in the retained stats)."""
        detector.known_answer = self.summary()
        return detector


def answers_now(detector: Detector, image: Any, decode: DecodeSettings) -> list[Answer]:
    """The model's detections on ``image`` (BGR) at the check's threshold, named with the model's
    own labels (before any label map) and without the config's class filters."""
    from agent.detect.detector import DetectionParams

    params = DetectionParams(
        score_threshold=decode.score_threshold,
        iou_threshold=detector.params.iou_threshold,
        max_detections=decode.max_detections,
        class_agnostic=detector.params.class_agnostic,
    )
    tensor, transform = detector.preprocess(image)
    found = detector.decode(detector.invoke(tensor), transform, params)
    records = found.with_labels(detector.model_labels).to_records()
    return [Answer(**{k: r[k] for k in ("class_id", "label", "score", "box_xyxy")}) for r in records]


def make_entry(
    platform: Platform, got: list[Answer], *, exact: bool = True, why: str | None = None
) -> AnswerEntry:
    """An answers entry for ``platform`` holding ``got``. ``exact`` keys it by every version and
    the machine (a recorded answer); otherwise by runtime and delegate only, for every version
    and machine (``*``), as shipped answers usually are."""
    return AnswerEntry(
        runtime=platform.runtime,
        runtime_version=platform.runtime_version if exact else ANY,
        delegate=platform.delegate,
        delegate_version=(platform.delegate_version or "none") if exact else ANY,
        machine=platform.machine if exact else ANY,
        why=why,
        recorded=Recorded(
            at=utc_iso(time.time()),
            runtime_version=platform.runtime_version,
            delegate_version=platform.delegate_version,
            machine=platform.machine,
            cpu=platform.cpu,
            agent_version=__version__,
        ),
        detections=got,
    )


def known_answer(detector: Detector, *, data_dir: Path | None, record: bool = True) -> KnownAnswerResult:
    """Run the check (see the module docstring) and time it; neither logs nor raises on drift.
    ``record`` False (``doctor``) never writes a file. ``UserError`` for a damaged answers file."""
    started = time.perf_counter()
    result = _check(detector, data_dir, record)
    result.elapsed_ms = (time.perf_counter() - started) * 1000.0
    return result


def check_known_answer(
    detector: Detector, *, data_dir: Path | None, allow_drift: bool = False
) -> KnownAnswerResult:
    """The start-up check: run it, record first answers, log the outcome, and raise ``UserError``
    (one line) on drift unless ``allow_drift``."""
    result = known_answer(detector, data_dir=data_dir)
    if result.status == "drift" and not allow_drift:
        raise drift_error(result)
    level = logging.WARNING if result.status in ("drift", "unchecked") else logging.INFO
    log.log(level, "known answer: %s (%.1f ms)", result.detail, result.elapsed_ms)
    for note in result.notes:
        log.warning("known answer: %s", note)
    return result


def drift_error(result: KnownAnswerResult) -> UserError:
    """The one-line error that stops ``run`` (and ``run --check``) on a known-answer mismatch."""
    return UserError(
        f"{result.detail}. Inference here is silently wrong: check the runtime and delegate "
        "(`edge-agent doctor`), or start anyway with `edge-agent run --allow-drift`"
    )


def _check(detector: Detector, data_dir: Path | None, record: bool) -> KnownAnswerResult:
    platform = platform_facts(detector)
    model_path = detector.spec.path
    sha = file_sha256(model_path)
    base = KnownAnswerResult("unchecked", detector.name, platform, "")
    shipped_path = model_path.with_name(model_path.stem + SHIPPED_SUFFIX)
    shipped = load_answers(shipped_path) if shipped_path.is_file() else None
    if shipped is not None and shipped.model.sha256 != sha:
        base.notes.append(
            f"{shipped_path} was made for another file than {model_path} (sha256 differs); "
            "using this machine's own recorded answers instead"
        )
        shipped = None
    if shipped is not None:
        chosen = select_entry(shipped, platform)
        if chosen is not None:
            return _compare(detector, base, shipped_path, shipped, chosen[0], "shipped")
    places = _recorded_places(detector, sha, data_dir)
    recorded_path, recorded = _find_recorded(model_path, sha, places)
    if recorded is not None and recorded_path is not None:
        chosen = select_entry(recorded, platform)
        if chosen is not None:
            entry, how = chosen
            result = _compare(detector, base, recorded_path, recorded, entry, "recorded")
            if result.status == "ok" and how == "upgrade" and record:
                _record(detector, recorded, [recorded_path, *places], result)
            return result
        places.insert(0, recorded_path)
    if recorded is not None:
        template = recorded
    elif shipped is not None:  # a catalog model without an entry for this platform: its frame
        frame = _absolute_frame(shipped_path, shipped.frame)
        template = shipped.model_copy(update={"frame": frame, "answers": []})
    else:
        template = _new_answers(model_path, sha)
    return _first_run(detector, base, template, places, sha, record)


def _recorded_places(detector: Detector, sha: str, data_dir: Path | None) -> list[Path]:
    """Where this machine records answers, in order: beside the model's card (a folder set up for
    the agent; never among third-party files without one), then the agent's data folder."""
    spec = detector.spec
    places = []
    if spec.card_path is not None:
        places.append(spec.card_path.parent / f"{spec.path.stem}{RECORDED_SUFFIX}")
    if data_dir is not None:
        places.append(data_dir / RECORDED_FOLDER / f"{spec.path.stem}.{sha[:12]}{RECORDED_SUFFIX}")
    return places


def _find_recorded(model_path: Path, sha: str, places: list[Path]) -> tuple[Path | None, KnownAnswers | None]:
    """The recorded answers for this model file (beside it, or at one of ``places``) and their path."""
    for path in dict.fromkeys([model_path.with_name(model_path.stem + RECORDED_SUFFIX), *places]):
        if path.is_file():
            answers = load_answers(path)
            if answers.model.sha256 == sha:
                return path, answers
    return None, None


def _absolute_frame(answers_file: Path, frame: FrameRef) -> FrameRef:
    """``frame`` named so that it is found from any folder (``{bundled}/...`` stays as it is)."""
    if frame.path.startswith(BUNDLED):
        return frame
    return FrameRef(path=str(frame_path(answers_file, frame).resolve()), sha256=frame.sha256)


def _new_answers(model_path: Path, sha: str) -> KnownAnswers:
    """Answers for a model that shipped none: the bundled default frame, default decode and tolerance."""
    frame = file_sha256(frame_path(model_path, FrameRef(path=DEFAULT_FRAME, sha256="0" * 64)))
    return KnownAnswers(
        model=ModelRef(file=model_path.name, sha256=sha), frame=FrameRef(path=DEFAULT_FRAME, sha256=frame)
    )


def _load_frame(answers_file: Path, answers: KnownAnswers) -> tuple[Any, str]:
    """The known frame as a BGR image and its name; ``UserError`` when missing or changed."""
    path = frame_path(answers_file, answers.frame)
    if not path.is_file():
        raise UserError(f"the known frame {path} named by {answers_file} is missing")
    if file_sha256(path) != answers.frame.sha256:
        raise UserError(f"the known frame {path} is not the one {answers_file} was made with (sha256)")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"the known frame {path} does not decode as an image")
    return image, f"{path.parent.name}/{path.name}"


def _compare(
    detector: Detector,
    base: KnownAnswerResult,
    answers_file: Path,
    answers: KnownAnswers,
    entry: AnswerEntry,
    source: Source,
) -> KnownAnswerResult:
    base.source, base.answers_file, base.compared_with = source, answers_file, entry
    where = f"{detector.name} on {base.platform.text()}"
    try:
        image, base.frame = _load_frame(answers_file, answers)
    except UserError as exc:
        base.detail = f"{where}: not checked: {exc}"
        return base
    base.got = answers_now(detector, image, answers.decode)
    comparison = compare_answers(
        entry.detections, base.got, answers.tolerance, answers.decode.score_threshold
    )
    base.comparison = comparison
    made = f"{source} answers (made with {entry.runtime} {entry.recorded.runtime_version} on {entry.recorded.machine})"
    if comparison.ok:
        base.status = "ok"
        base.detail = f"{where}: {comparison.agreement()} with the {made} on {base.frame}"
    else:
        tol = answers.tolerance
        base.status = "drift"
        base.detail = (
            f"known-answer check failed: {where} on {base.frame}: {comparison.differences()} "
            f"(compared with the {made}; tolerance score {tol.score:g}, IoU {tol.iou:g})"
        )
    return base


def _first_run(
    detector: Detector,
    base: KnownAnswerResult,
    template: KnownAnswers,
    places: list[Path],
    sha: str,
    record: bool,
) -> KnownAnswerResult:
    answers = KnownAnswers(
        model=ModelRef(file=detector.spec.path.name, sha256=sha),
        frame=template.frame,
        decode=template.decode,
        tolerance=template.tolerance,
        answers=list(template.answers),
    )
    where = f"{detector.name} on {base.platform.text()}"
    try:
        image, base.frame = _load_frame(places[0] if places else detector.spec.path, answers)
    except UserError as exc:
        base.detail = f"{where}: not checked: {exc}"
        return base
    if not record:
        base.detail = (
            f"{where}: no known answers for this model here yet; `edge-agent run` records them at its "
            "first start and compares them at every later start"
        )
        return base
    base.got = answers_now(detector, image, answers.decode)
    if not base.got:
        base.notes.append(
            f"{detector.name} finds nothing on {base.frame} even at score {answers.decode.score_threshold:g}: "
            "its known answer is 'nothing', so the check catches a crash but not outputs that collapse to zeros"
        )
    _record(detector, answers, places, base)
    return base


def _record(detector: Detector, answers: KnownAnswers, places: list[Path], result: KnownAnswerResult) -> None:
    """Add this platform's answers (``result.got``) to ``answers`` and save them at the first of
    ``places`` that can be written."""
    platform = result.platform
    got = result.got
    answers.answers.append(make_entry(platform, got))
    for place in dict.fromkeys(places):
        try:
            save_answers(place, answers)
        except OSError as exc:
            result.notes.append(f"cannot write {place}: {exc.strerror}")
            continue
        result.answers_file, result.source = place, "recorded"
        if result.status != "ok":  # a first run; an upgrade that matched stays "ok"
            result.status = "recorded"
            result.detail = (
                f"{detector.name} on {platform.text()}: first run here, recorded {len(got)} detection(s) "
                f"on {result.frame} as this machine's known answers in {place}"
            )
        return
    if result.status != "ok":
        result.detail = (
            f"{detector.name} on {platform.text()}: first run here, answers not recorded (no writable "
            "place: give the model a card, or set output.dir to a writable folder)"
        )
