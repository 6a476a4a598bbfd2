#!/usr/bin/env python3
"""Print the configuration reference (Markdown) from the config models themselves.

    python scripts/config_reference.py            # print it
    python scripts/config_reference.py --check docs/configuration.md   # exit 1 if its copy is stale

docs/configuration.md holds the output between ``<!-- config-reference:start -->`` and
``<!-- config-reference:end -->`` (``scripts/update_docs.py`` writes it); a test runs ``--check`` so
the two never drift apart.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(a).replace("'", "") for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _factory_description(factory: Any) -> str | None:
    """What a documented factory function returns, from its docstring's first sentence.

    Such a factory computes a default that depends on the machine (e.g. the host name), so the
    reference describes it rather than printing what it returned where the reference was made.
    Undocumented factories (``list``, ``dict``, lambdas, ``_default_policies``) are called.
    """
    if not inspect.isfunction(factory):
        return None
    doc = inspect.getdoc(factory)
    if not doc:
        return None
    sentence = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
    return sentence[:1].lower() + sentence[1:]


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        described = _factory_description(field.default_factory)
        if described is not None:
            return described
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if value not in ("", [], {}) else f"`{value!r}`"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def rows(model: type[BaseModel], prefix: str) -> list[str]:
    """Table rows for ``model``'s fields; nested sections get their own rows."""
    out: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        sub = _section_model(field.annotation)
        key = f"{prefix}{name}"
        if sub is not None:
            nested.append((key, sub))
            continue
        text = " ".join((field.description or "").split()).replace("|", "\\|")
        out.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {text} |")
    for key, sub in nested:
        out.extend(rows(sub, f"{key}."))
    return out


def reference() -> str:
    """The whole reference: one table per top-level section."""
    from agent.config import AgentConfig

    parts = []
    for name, field in AgentConfig.model_fields.items():
        model = _section_model(field.annotation)
        assert model is not None
        doc = " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
        parts.append(f"## `{name}:`\n\n{doc}\n\n| key | type | default | meaning |\n|---|---|---|---|")
        parts.append("\n".join(rows(model, f"{name}.")) + "\n")
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="README", help="fail when that file's reference is not current")
    args = parser.parse_args()
    text = reference()
    if not args.check:
        print(text)
        return 0
    readme = Path(args.check).read_text(encoding="utf-8")
    try:
        current = readme.split(START, 1)[1].split(END, 1)[0].strip()
    except IndexError:
        print(f"{args.check}: no {START} ... {END} block", file=sys.stderr)
        return 1
    if current != text.strip():
        print(
            f"{args.check}: the configuration reference is stale; regenerate it with scripts/config_reference.py"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
