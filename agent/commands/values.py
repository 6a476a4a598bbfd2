"""Command-line values and their mistakes, in one line like a config error.

``number(float, ge=0, le=1)`` is an argparse ``type`` that refuses ``--threshold 1.5`` with
``--threshold: must be between 0 and 1, got 1.5``; ``like(DetectorSettings, "score_threshold")``
takes the bounds from the config key the option overrides, so the flag and the YAML agree.
``AgentArgumentParser`` prints every usage mistake as one ``edge-agent: error:`` line and exits 2,
and ``one_line(ValidationError)`` turns a pydantic error into the same kind of line (never its
multi-line dump with a web link).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn

import annotated_types
from pydantic import BaseModel, ValidationError

from agent.errors import EXIT_USAGE

Number = int | float


def _plain(value: Number) -> str:
    """``1``, ``0.5``: as a person writes the number."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_range(
    ge: Number | None = None, gt: Number | None = None, le: Number | None = None, lt: Number | None = None
) -> str:
    """``must be between 0 and 1``, ``must be more than 0``, ``must be at least 1``, ..."""
    low = f"at least {_plain(ge)}" if ge is not None else f"more than {_plain(gt)}" if gt is not None else ""
    high = f"at most {_plain(le)}" if le is not None else f"less than {_plain(lt)}" if lt is not None else ""
    if ge is not None and le is not None:
        return f"must be between {_plain(ge)} and {_plain(le)}"
    return "must be " + " and ".join(part for part in (low, high) if part)


def number(
    kind: type[int] | type[float],
    *,
    ge: Number | None = None,
    gt: Number | None = None,
    le: Number | None = None,
    lt: Number | None = None,
) -> Callable[[str], Number]:
    """An argparse ``type``: the text as ``kind`` within the bounds, else a one-line reason."""
    rule = describe_range(ge, gt, le, lt)
    whole = kind is int

    def parse(text: str) -> Number:
        try:
            value: Number = int(text) if whole else float(text)
        except ValueError:
            what = "a whole number" if whole else "a number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        outside = (
            (isinstance(value, float) and not math.isfinite(value))
            or (ge is not None and value < ge)
            or (gt is not None and value <= gt)
            or (le is not None and value > le)
            or (lt is not None and value >= lt)
        )
        if outside:
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def like(model: type[BaseModel], key: str) -> Callable[[str], Number]:
    """``number`` with the type and bounds of the config key ``model.key`` (``Field(ge=..., le=...)``)."""
    field = model.model_fields[key]
    bounds: dict[str, Number] = {}
    for item in field.metadata:
        for name in ("ge", "gt", "le", "lt"):
            value = getattr(item, name, None)
            if isinstance(item, annotated_types.BaseMetadata) and value is not None:
                bounds[name] = value
    annotation = str(field.annotation)
    return number(int if "int" in annotation else float, **bounds)


def one_line(error: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """A pydantic error as ``key: reason; key: reason``, keys named as the user gave them
    (``flags`` maps a config key to its option, e.g. ``score_threshold`` -> ``--threshold``)."""
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item.get("loc", ()))
        key = (flags or {}).get(key, key)
        reason = str(item.get("msg", "invalid value")).removeprefix("Value error, ")
        problems.append(f"{key}: {reason}" if key else reason)
    return "; ".join(dict.fromkeys(problems))


class AgentArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage mistakes are one line, ``edge-agent: error: ...``, exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line (``--flag: reason`` for a value) and exit 2."""
        if message.startswith("argument "):  # "argument --threshold/-t: must be ..." -> "--threshold: ..."
            flag, _, reason = message.removeprefix("argument ").partition(": ")
            message = f"{flag.split('/')[0]}: {reason}"
        else:
            message = f"{message} (see {self.prog} --help)"
        sys.stderr.write(f"edge-agent: error: {message}\n")
        sys.exit(EXIT_USAGE)
