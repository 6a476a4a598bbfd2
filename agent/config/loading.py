"""YAML files to typed, validated models, with errors that name the key and the line.

``load_yaml_model(path, Model)`` reads any ``StrictModel`` (the agent's config, model cards, the
review receiver's config). Unknown keys,
duplicate keys, wrong types and out-of-range values are refused with every problem listed
as ``FILE:LINE: key.path: what is wrong``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from agent.bundled import BUNDLED_DATA
from agent.config.base import StrictModel
from agent.errors import ConfigError

M = TypeVar("M", bound=StrictModel)
KeyPath = tuple[str | int, ...]


def _index_lines(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], problems: list[str]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                problems.append(
                    f"{key_node.start_mark.line + 1}: {dotted}: duplicate key (remove one of them)"
                )
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines, problems)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines, problems)


def _line_for(loc: KeyPath, lines: dict[KeyPath, int]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _describe(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "invalid value"))
    if error.get("type") == "extra_forbidden":
        return "unknown key (check the spelling against the configuration reference in the README)"
    if error.get("type") in ("missing",):
        return "required key is missing"
    message = message.removeprefix("Value error, ")  # pydantic's wrapping of our own messages
    value = error.get("input")
    # echo the value only for type and range mistakes: a validator may be refusing a secret
    kind = str(error.get("type", ""))
    if (
        value is not None
        and not isinstance(value, dict | list)
        and not kind.startswith(("value_error", "assertion"))
    ):
        shown = repr(value)
        message += f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
    return message


def parse_yaml_text(text: str, source: str) -> tuple[Any, dict[KeyPath, int]]:
    """Parse YAML text into plain data plus a map from key path to 1-based line number."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    lines: dict[KeyPath, int] = {}
    problems: list[str] = []
    if node is not None:
        _index_lines(node, (), lines, problems)
    if problems:
        raise ConfigError("\n".join(f"{source}:{p}" for p in problems))
    return data, lines


def validate_data(data: Any, model: type[M], source: str, lines: dict[KeyPath, int] | None = None) -> M:
    """Validate parsed data against ``model``; ``ConfigError`` lists every problem with its line."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys to values")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        out = []
        for error in exc.errors():
            loc: KeyPath = tuple(error.get("loc", ()))
            # pydantic adds union member names ("float", "list[float]") to the location
            key_loc = tuple(p for p in loc if isinstance(p, int) or not _is_type_tag(str(p)))
            line = _line_for(key_loc, lines or {})
            where = f"{source}:{line}" if line else source
            dotted = ".".join(str(p) for p in key_loc) or "(top level)"
            out.append(f"{where}: {dotted}: {_describe(dict(error))}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(out))) from None


_TYPE_TAGS = {"float", "int", "str", "bool", "none", "list", "dict", "literal", "tuple", "path"}


def _is_type_tag(part: str) -> bool:
    """pydantic names union members in error locations (``float``, ``list[float]``); they are
    not keys the user wrote."""
    return any(c in part for c in "[(") or part.lower() in _TYPE_TAGS or part.startswith("function-")


def load_yaml_model(
    path: str | Path, model: type[M], what: str = "config", *, expand: Callable[[Any], Any] | None = None
) -> M:
    """Read ``path`` and validate it against ``model``; ``expand`` may rewrite the parsed data first."""
    file = Path(path).expanduser()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file {file} does not exist; see configs/ for examples") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {file}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{file}:{line}: not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be "
            "read; save the file as UTF-8"
        ) from None
    data, lines = parse_yaml_text(text, str(file))
    return validate_data(expand(data) if expand else data, model, str(file), lines)


DEFAULT_CONFIG = BUNDLED_DATA / "default.yaml"
BUNDLED_PLACEHOLDER = "{bundled}"


def expand_bundled(data: Any) -> Any:
    """Replace ``{bundled}`` in every string with the folder of the files shipped in the package
    (the demo model and sample timelapse), so a config can point at them wherever pip put them."""
    if isinstance(data, str):
        return data.replace(BUNDLED_PLACEHOLDER, str(BUNDLED_DATA))
    if isinstance(data, dict):
        return {k: expand_bundled(v) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_bundled(v) for v in data]
    return data
