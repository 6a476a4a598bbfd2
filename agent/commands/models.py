"""``edge-agent models``: the model catalog. ``list`` what there is, ``fetch NAME`` to install a
model into the models folder, ``verify [NAME]`` to re-check what is installed (docs/models.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent.detect.catalog import CatalogEntry, load_catalog
from agent.detect.fetch import DEFAULT_TIMEOUT_S, MIRROR_ENV, check_license, fetch_entry
from agent.detect.model_store import (
    MODELS_DIR_ENV,
    Copy,
    installed_copies,
    models_dir,
    search_dirs,
    verify_copy,
)
from agent.errors import EXIT_RUNTIME, UserError


def add_models_command(subparsers: Any) -> None:
    """Register ``edge-agent models`` and its ``list``, ``fetch`` and ``verify`` commands."""
    parser = subparsers.add_parser(
        "models",
        help="list, fetch and verify models of the catalog",
        description="The model catalog: models pinned to their upstream files (URL, sha256, size, license) "
        f"with their model cards. Models go to the models folder: ${MODELS_DIR_ENV}, else "
        "/var/lib/edge-agent/models for a system install (root or the service user), else "
        "$XDG_DATA_HOME/edge-agent/models (~/.local/share/edge-agent/models).",
    )
    commands = parser.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    listing = commands.add_parser("list", help="the catalog, and where each model is installed")
    listing.add_argument("--dir", help="the models folder to look in (default: see `edge-agent models -h`)")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=run_list)

    fetch = commands.add_parser("fetch", help="download a model, check its sha256, install it with its card")
    fetch.add_argument("name", metavar="NAME", help="catalog name (edge-agent models list)")
    fetch.add_argument("--dir", help="install into DIR/NAME (default: the models folder)")
    fetch.add_argument(
        "--accept-license", action="store_true", help="accept a license other than Apache-2.0 or MIT"
    )
    fetch.add_argument("--force", action="store_true", help="fetch again even when a verified copy is there")
    fetch.add_argument(
        "--mirror",
        default=os.environ.get(MIRROR_ENV) or None,
        help=f"fetch MIRROR/NAME/FILE instead of the upstream URLs: a URL or a folder (env {MIRROR_ENV})",
    )
    fetch.add_argument(
        "--timeout-s",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"give up when the server sends nothing for this long (default {DEFAULT_TIMEOUT_S:g} s)",
    )
    fetch.set_defaults(handler=run_fetch)

    verify = commands.add_parser(
        "verify", help="re-check installed models' sha256, cards, and that they load"
    )
    verify.add_argument(
        "name", metavar="NAME", nargs="?", help="only this model (default: every installed one)"
    )
    verify.add_argument(
        "--dir", help="the models folder to check (default: every folder models are read from)"
    )
    verify.add_argument("--json", action="store_true", help="one JSON document on stdout")
    verify.set_defaults(handler=run_verify)


def _dirs(args: argparse.Namespace) -> list[Path]:
    return [Path(args.dir).expanduser()] if args.dir else search_dirs()


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def list_rows(dirs: list[Path]) -> list[dict[str, Any]]:
    """One row per catalog entry: name, license, size in bytes, installed, where (the first copy)."""
    rows = []
    for entry in load_catalog().entries.values():
        copies = installed_copies(entry, dirs)
        first = copies[0] if copies else None
        rows.append(
            {
                "name": entry.name,
                "license": entry.license,
                "size": entry.size,
                "installed": first is not None,
                "bundled": bool(first and first.bundled),
                "where": str(first.model) if first else None,
                "demo": entry.demo,
                "version": entry.version,
                "description": " ".join(entry.description.split()),
            }
        )
    return rows


def run_list(args: argparse.Namespace) -> int:
    """Print the catalog with each model's state."""
    dirs = _dirs(args)
    rows = list_rows(dirs)
    if args.json:
        print(json.dumps({"models_dir": str(dirs[0]), "searched": [str(d) for d in dirs], "models": rows}))
        return 0
    width = max(len(r["name"]) for r in rows) + 2
    print(f"{'NAME':<{width}}{'LICENSE':<12}{'SIZE':>9}  {'INSTALLED':<10}WHERE")
    for row in rows:
        state = "bundled" if row["bundled"] else "yes" if row["installed"] else "no"
        where = row["where"] or "-"
        print(f"{row['name']:<{width}}{row['license']:<12}{_mb(row['size']):>9}  {state:<10}{where}")
    print(f"models folder: {dirs[0]} (fetch installs there; --dir or ${MODELS_DIR_ENV} to change it)")
    return 0


class _Bar:
    """A progress bar on stderr for a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.bars: dict[str, Any] = {}
        self.enabled = sys.stderr.isatty()

    def __call__(self, file_name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(file_name)
        if bar is None:
            bar = self.bars[file_name] = tqdm(
                total=total, unit="B", unit_scale=True, desc=file_name, file=sys.stderr, leave=False
            )
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _describe(entry: CatalogEntry) -> str:
    text = " ".join(entry.description.split())
    return f"{entry.name} {entry.version}: {text}\nlicense: {entry.license} ({entry.license_url})"


def run_fetch(args: argparse.Namespace) -> int:
    """Show the license, check it was accepted, install the model; prints where it went."""
    entry = load_catalog().get(args.name)
    print(_describe(entry))
    check_license(entry, args.accept_license)
    root = Path(args.dir).expanduser() if args.dir else models_dir()
    bar = _Bar()
    try:
        result = fetch_entry(
            entry, root, mirror=args.mirror, force=args.force, timeout_s=args.timeout_s, progress=bar
        )
    finally:
        bar.close()
    if not result.written:
        print(
            f"{entry.name} is installed in {result.folder} and matches the catalog (--force fetches it again)"
        )
    else:
        verb = "repaired" if result.repaired else "installed"
        print(f"{verb} {entry.name} in {result.folder}: {', '.join(result.written)} (sha256 checked)")
    print(f"use it with `detector.model: {entry.name}` in a config, or `--model {entry.name}`")
    return 0


def _print_copy(copy: Copy) -> None:
    status = "FAIL" if copy.problems else "OK"
    detail = "; ".join(copy.problems) or "sha256 and card match the catalog, loads as a detector"
    print(f"{status:<5}{copy.entry.name}  {copy.model}: {detail}")
    for note in copy.notes:
        print(f"     note: {note}")
    if copy.problems and copy.bundled:
        print("     fix: reinstall edge-agent (the package's own copy is damaged)")
    elif copy.problems:
        print(f"     fix: {copy.entry.fetch_command()} --force --dir {copy.folder.parent}")


def _copy_json(copy: Copy) -> dict[str, Any]:
    return {
        "name": copy.entry.name,
        "where": str(copy.model),
        "bundled": copy.bundled,
        "ok": not copy.problems,
        "problems": copy.problems,
        "notes": copy.notes,
    }


def run_verify(args: argparse.Namespace) -> int:
    """Check every installed copy (or NAME's); exit 1 when one is damaged."""
    catalog = load_catalog()
    dirs = _dirs(args)
    entries = [catalog.get(args.name)] if args.name else list(catalog.entries.values())
    copies = [verify_copy(c) for e in entries for c in installed_copies(e, dirs)]
    if args.name and not copies:
        raise UserError(
            f"{args.name} is not installed in {' or '.join(map(str, dirs))}; "
            f"fetch it with: {entries[0].fetch_command()}"
        )
    damaged = any(c.problems for c in copies)
    if args.json:
        print(json.dumps({"ok": not damaged, "copies": [_copy_json(c) for c in copies]}))
    else:
        for copy in copies:
            _print_copy(copy)
    return EXIT_RUNTIME if damaged else 0
