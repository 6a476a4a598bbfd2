"""``edge-agent doctor``: check this machine against a config and print what to fix.

Prints one row per check (check, status, detail, and a ``fix:`` line under it when there is
something to do) as each finishes, then a summary; ``--json`` prints one JSON document instead::

    {"ok": true, "exit_code": 0, "config": "...", "counts": {"OK": 20, ...},
     "checks": [{"name": "...", "status": "OK", "required": true, "detail": "...", "fix": "", "data": {}}]}

Exit code 0 when every required check passed, 1 when one failed, 2 for a config error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections import Counter
from typing import Any, TextIO

from agent.commands.values import number
from agent.config import load_config
from agent.doctor import Check, DoctorOptions, Status, exit_code, run_checks

NAME_WIDTH = 26
STATUS_WIDTH = 6


def add_doctor_command(subparsers: Any) -> None:
    """Register ``edge-agent doctor``."""
    parser = subparsers.add_parser(
        "doctor",
        help="check packages, runtimes, Edge TPU, source, broker and disk for a config",
        description="Check that this machine can run CONFIG: Python and packages, TFLite runtimes with an "
        "invoke timing of the model on each (and which is fastest), the Edge TPU (library, device, udev "
        "rule, plugdev), the source yields a frame, the broker accepts the connection, disk space against "
        "the harvest quota, and the output folders are writable. Exit code 1 when a required check fails.",
    )
    parser.add_argument("--config", "-c", help="YAML config file (default: the bundled demo config)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument(
        "--invokes",
        type=number(int, ge=1),
        default=20,
        help="timed invokes per runtime and thread count, in up to 5 interleaved rounds (default 20)",
    )
    parser.add_argument(
        "--timeout",
        type=number(float, gt=0),
        default=20.0,
        help="seconds to wait for the source's first frame and for the broker (default 20)",
    )
    parser.add_argument("--model", help="time this .tflite model instead of detector.model")
    parser.set_defaults(handler=run_doctor)


class TablePrinter:
    """Prints checks as rows, each as soon as it is known, wrapping long details under their column."""

    def __init__(self, out: TextIO, width: int | None = None) -> None:
        self.out = out
        total = width or shutil.get_terminal_size((120, 24)).columns
        self.indent = " " * (NAME_WIDTH + STATUS_WIDTH + 2)
        self.detail_width = max(50, total - len(self.indent))

    def header(self) -> None:
        """The column titles."""
        self.out.write(f"{'CHECK':<{NAME_WIDTH}} {'STATUS':<{STATUS_WIDTH}} DETAIL / fix\n")
        self.out.flush()

    def row(self, check: Check) -> None:
        """One check: name, status and detail, then ``fix: ...`` when there is one."""
        lines = self._wrap(check.detail)
        if check.fix:
            lines += self._wrap(f"fix: {check.fix}")
        name = check.name if len(check.name) <= NAME_WIDTH else check.name[: NAME_WIDTH - 1] + "~"
        self.out.write(f"{name:<{NAME_WIDTH}} {check.status!s:<{STATUS_WIDTH}} {lines[0]}\n")
        for line in lines[1:]:
            self.out.write(f"{self.indent}{line}\n")
        self.out.flush()

    def summary(self, checks: list[Check]) -> None:
        """Counts per status and the verdict."""
        counts = Counter(str(c.status) for c in checks)
        parts = ", ".join(f"{counts.get(str(s), 0)} {s}" for s in Status)
        failed = [c.name for c in checks if c.status == Status.FAIL]
        verdict = f"required checks failed: {', '.join(failed)}" if failed else "every required check passed"
        self.out.write(f"\n{parts}: {verdict}\n")
        self.out.flush()

    def _wrap(self, text: str) -> list[str]:
        return textwrap.wrap(text, self.detail_width, break_long_words=False, break_on_hyphens=False) or [""]


def run_doctor(args: argparse.Namespace) -> int:
    """Load the config (exit 2 when it is invalid), run every check, print them; 1 when one failed."""
    config = load_config(args.config)
    options = DoctorOptions(invokes=args.invokes, timeout_s=args.timeout, model=args.model)
    name = args.config or "the bundled default config"
    if args.json:
        checks = run_checks(config, options, config_name=name)
        code = exit_code(checks)
        document = {
            "ok": code == 0,
            "exit_code": code,
            "config": name,
            "counts": {str(s): sum(c.status == s for c in checks) for s in Status},
            "checks": [c.to_json() for c in checks],
        }
        print(json.dumps(document, indent=2))
        return code
    printer = TablePrinter(sys.stdout)
    printer.header()
    checks = run_checks(config, options, config_name=name, on_check=printer.row)
    printer.summary(checks)
    return exit_code(checks)
