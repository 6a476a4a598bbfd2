#!/usr/bin/env python3
"""The arm64 proof: edge-agent installed and run in Raspberry Pi OS Bookworm 64-bit's userland.

Builds (once, cached) a Debian 12 arm64 root with debootstrap, runs it under qemu-user-static with a
Pi 4's CPU (``QEMU_CPU=cortex-a72`` and its cpuinfo; facts in ../shared/arm64/NOTES.md), and there:

1. installs the project as the README does (``python3 -m venv .venv && .venv/bin/pip install -e .``)
   and as ``scripts/install-pi.sh --root`` does (with ``--tflite-runtime --with-mosquitto``: the
   broker lets the MQTT test of step 4 run too);
2. runs the main job (``edge-agent run`` on the bundled demo) with ai-edge-litert and with
   tflite-runtime, and compares each run's detections with the same run on this x86_64 machine
   (boxes within a pixel, scores within 0.02; the same alerts, VoTT assets and outbox messages);
3. runs the known-answer check (``edge-agent doctor``'s row) with both runtimes;
4. runs the reference tests and the known-answer tests under emulation, with both runtimes
   (tests/test_detect.py's reference tests, tests/test_arch_references.py and
   tests/test_known_answer.py; needs ../shared);
5. runs the main job on qemu's default CPU model (``QEMU_CPU=max``: SME on, LiteRT's XNNPACK int8
   kernels silently wrong) and expects the agent to refuse to start.

Every step's wall time goes into the report (printed, and JSON with ``--json``). Exit 0 when every
check passed. Needs root (debootstrap, chroot, mount), apt and PyPI.

    sudo .venv/bin/python scripts/arm64/check.py                     # root cached in ../arm64-cache
    sudo .venv/bin/python scripts/arm64/check.py --json report.json --rebuild
    sudo .venv/bin/python scripts/arm64/check.py --shell 'cd /home/pi/edge-agent && .venv/bin/pytest -q'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
from emulated_root import EmulatedRoot, RootError, enable_binfmt, install_host_tools
from jobs import REPO, SCORE, compare_jobs, job_config, read_job

HOME = "/home/pi"
CHECKOUT = f"{HOME}/edge-agent"  # the README's checkout; ../shared beside it, as in development
RUNTIMES = ("ai_edge_litert", "tflite_runtime")
SCHEMA = "edge-agent-arm64-check/1"


class Report:
    """Steps with wall times and outcomes, and the checks that decide the exit code."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.checks: dict[str, bool] = {}
        self.facts: dict[str, Any] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time a step; what it puts in the yielded dict is reported with it."""
        record: dict[str, Any] = {"step": name}
        print(f"== {name}", flush=True)
        started = time.monotonic()
        try:
            yield record
        finally:
            record["seconds"] = round(time.monotonic() - started, 1)
            self.steps.append(record)
            print(f"   {record['seconds']:.1f} s  {_brief(record)}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one pass/fail check."""
        self.checks[name] = ok
        print(f"   [{'PASS' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)

    def to_json(self) -> dict[str, Any]:
        """The whole report."""
        return {
            "schema": SCHEMA,
            "ok": all(self.checks.values()),
            **self.facts,
            "checks": self.checks,
            "steps": self.steps,
        }


def _brief(record: dict[str, Any]) -> str:
    shown = {
        k: v for k, v in record.items() if k not in ("step", "seconds") and not isinstance(v, dict | list)
    }
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def copy_checkout(root: EmulatedRoot) -> int:
    """The files git knows (tracked and untracked, not ignored) into the root's checkout, keeping
    its .venv (so a rerun's install is quick); returns how many."""
    names = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    target = root.path / CHECKOUT.lstrip("/")
    if target.is_dir():
        for child in target.iterdir():
            if child.name != ".venv":
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    copied = 0
    for raw in filter(None, names):
        source = REPO / raw.decode()
        if source.is_file():
            (target / raw.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / raw.decode())
            copied += 1
    return copied


def run_job_x86(runtime: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """The main job on this machine with ``runtime``, in ``folder`` (emptied first)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(job_config(runtime))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", "agent.yaml"],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def run_job_arm64(root: EmulatedRoot, runtime: str, name: str, qemu_cpu: str | None = None) -> Any:
    """The main job in the root with ``runtime``, by the binary install-pi.sh installed."""
    folder = root.path / HOME.lstrip("/") / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text(job_config(runtime))
    env = {"QEMU_CPU": qemu_cpu} if qemu_cpu else None
    command = f"cd {HOME}/{name} && /opt/edge-agent/venv/bin/edge-agent run --config agent.yaml"
    return root.run(command, env=env, timeout=1800, check=False), folder


def known_answer_line(stderr: str) -> str:
    """The log line of the start-up known-answer check (or the error that stopped the start)."""
    for line in stderr.splitlines():
        if "known answer:" in line or "known-answer check failed" in line:
            return line.split("known answer: ", 1)[-1]
    return "(no known-answer line)"


def main_jobs(root: EmulatedRoot, report: Report, work: Path) -> None:
    """Step 2 and 3: the main job on both machines with both runtimes, compared; doctor's row."""
    for runtime in RUNTIMES:
        with report.step(f"main job x86_64 {runtime}") as record:
            x86 = run_job_x86(runtime, work / f"x86-{runtime}")
            record["exit"] = x86.returncode
        with report.step(f"main job arm64 {runtime}") as record:
            arm, folder = run_job_arm64(root, runtime, f"job-{runtime}")
            record["exit"] = arm.returncode
            record["known_answer"] = known_answer_line(arm.stderr)
        if x86.returncode or arm.returncode:
            report.check(f"main job {runtime} runs", False, (x86.stderr + arm.stderr)[-600:])
            continue
        comparison = compare_jobs(
            read_job(work / f"x86-{runtime}" / "edge-agent-data"),
            read_job(folder / "edge-agent-data"),
            runtime,
        )
        report.facts.setdefault("main_job", {})[runtime] = comparison.summary()
        detail = (
            f"{comparison.detections} detections in {comparison.frames} frames, largest box difference "
            f"{comparison.largest_box_px:.2f} px ({comparison.largest_box_at or 'none'}), score "
            f"{comparison.largest_score:.4f}, alerts "
            f"{comparison.alerts}, assets {comparison.assets}, messages {comparison.messages}"
        )
        report.check(
            f"main job {runtime}: arm64 == x86_64 within {comparison.box_px:g} px / {SCORE}",
            comparison.same,
            detail,
        )
        report.check(
            f"known answer {runtime} at start-up",
            "known detections match" in record["known_answer"],
            record["known_answer"],
        )
        with report.step(f"doctor arm64 {runtime}") as record:
            doctor = root.run(
                f"cd {HOME}/job-{runtime} && /opt/edge-agent/venv/bin/edge-agent doctor --config agent.yaml "
                "--json --invokes 2 --timeout 10",
                timeout=1800,
                check=False,
            )
            rows = {c["name"]: c for c in json.loads(doctor.stdout or "{}").get("checks", [])}
            row = rows.get("known answer", {"status": "absent", "detail": doctor.stderr[-300:]})
            record["known_answer_row"] = f"{row['status']} {row['detail']}"
        report.check(f"doctor known answer {runtime}", row["status"] == "OK", row["detail"])


def refused_on_max(root: EmulatedRoot, report: Report) -> None:
    """Step 5: with qemu's SME CPU model the agent must refuse to start, in one line."""
    with report.step("main job arm64 ai_edge_litert, QEMU_CPU=max") as record:
        result, _ = run_job_arm64(root, "ai_edge_litert", "job-max", qemu_cpu="max")
        errors = [line for line in result.stderr.splitlines() if line.startswith("edge-agent: error:")]
        record["exit"] = result.returncode
        record["error"] = errors[0] if errors else result.stderr[-300:]
    refused = result.returncode == 1 and len(errors) == 1 and "known-answer check failed" in errors[0]
    report.check("QEMU_CPU=max: the agent refuses to start", refused, record["error"])


def tests_under_emulation(root: EmulatedRoot, report: Report, shared: Path | None) -> None:
    """Step 4: the reference and known-answer tests in the README's venv, both runtimes installed."""
    if shared is None:
        report.facts["tests"] = "skipped: ../shared is absent"
        return
    with report.step("pytest under emulation (reference + known-answer tests)") as record:
        result = root.run(
            f"cd {CHECKOUT} && .venv/bin/python -m pytest -q -p no:cacheprovider -ra "
            "tests/test_detect.py::test_detect_reproduces_reference_detections "
            "tests/test_arch_references.py tests/test_known_answer.py",
            timeout=3600,
            check=False,
        )
        summary = [line for line in result.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
        record["summary"] = summary[-1] if summary else result.stdout[-300:]
        record["output_tail"] = result.stdout.splitlines()[-30:]
    report.check(
        "reference and known-answer tests pass under emulation", result.returncode == 0, record["summary"]
    )


def installs(root: EmulatedRoot, report: Report) -> None:
    """Step 1: the README's install, the test tools, and install-pi.sh --root."""
    with report.step("copy the checkout into the root") as record:
        record["files"] = copy_checkout(root)
    with report.step("README install: python3 -m venv .venv && .venv/bin/pip install -e .") as record:
        result = root.run(
            f"cd {CHECKOUT} && python3 -m venv .venv && .venv/bin/pip install -q -e .", check=False
        )
        record["exit"] = result.returncode
    report.check("README install", result.returncode == 0, result.stderr[-500:] if result.returncode else "")
    with report.step("test tools: pip install tflite-runtime pytest pytest-timeout") as record:
        result = root.run(
            f"cd {CHECKOUT} && .venv/bin/pip install -q 'tflite-runtime>=2.14' pytest pytest-timeout"
        )
        versions = root.run(
            f"{CHECKOUT}/.venv/bin/pip list 2>/dev/null | grep -iE 'litert|tflite|numpy|opencv'"
        )
        record["versions"] = " ".join(versions.stdout.split())
    with report.step(
        "scripts/install-pi.sh --root ROOT --no-start --tflite-runtime --with-mosquitto"
    ) as record:
        # As a user runs it on a Pi, from the checkout; apt and pip run in the root through chroot.
        result = subprocess.run(
            [
                "bash",
                str(REPO / "scripts" / "install-pi.sh"),
                "--root",
                str(root.path),
                "--no-start",
                "--tflite-runtime",
                "--with-mosquitto",
            ],
            capture_output=True,
            text=True,
            env=root.environment(),
            timeout=3600,
            check=False,
        )
        record["exit"] = result.returncode
        version = root.run("/opt/edge-agent/venv/bin/edge-agent --version", check=False)
        record["version"] = version.stdout.strip()
    report.check(
        "install-pi.sh --root",
        result.returncode == 0 and version.returncode == 0,
        (result.stdout + result.stderr)[-500:] if result.returncode else record["version"],
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_cache = Path(os.environ.get("EDGE_AGENT_ARM64_CACHE", REPO.parent / "arm64-cache"))
    parser.add_argument(
        "--cache", type=Path, default=default_cache, help=f"root and pip cache ({default_cache})"
    )
    parser.add_argument("--rebuild", action="store_true", help="debootstrap the root again")
    parser.add_argument("--mirror", help="Debian mirror (default: the one in this machine's apt sources)")
    parser.add_argument(
        "--shared", type=Path, default=Path(os.environ.get("EDGE_AGENT_SHARED", REPO.parent / "shared"))
    )
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument(
        "--shell", help=f"only copy the checkout to {CHECKOUT} and run this shell command in the root"
    )
    parser.add_argument(
        "--qemu-cpu", default="cortex-a72", help="CPU model qemu emulates (default cortex-a72)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every step; exit 0 when every check passed."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("arm64 check: needs root (debootstrap, chroot, mount): run it with sudo", file=sys.stderr)
        return 2
    shared = args.shared if (args.shared / "models").is_dir() else None
    root = EmulatedRoot(args.cache, qemu_cpu=args.qemu_cpu)
    if args.mirror:
        root.mirror = args.mirror
    if shared is not None:
        root.read_only[f"{HOME}/shared"] = shared
    report = Report()
    report.facts.update(
        host=platform.machine(), host_cpu=_host_cpu(), qemu_cpu=args.qemu_cpu, cache=str(args.cache)
    )
    started = time.monotonic()
    try:
        with report.step("host tools and binfmt") as record:
            record["installed"] = " ".join(install_host_tools()) or "nothing"
            record["binfmt_flags"] = enable_binfmt()
        with report.step("debootstrap bookworm arm64 (unless cached)") as record:
            took = root.ensure(rebuild=args.rebuild)
            record["built"] = took is not None
        with root.mounted():
            arch = root.run("uname -m && python3 --version").stdout.split()
            report.facts["root"] = " ".join(arch)
            if args.shell:
                copy_checkout(root)
                return _shell(root, args.shell)
            installs(root, report)
            main_jobs(root, report, args.cache / "x86-jobs")
            tests_under_emulation(root, report, shared)
            refused_on_max(root, report)
    except (RootError, subprocess.SubprocessError, OSError) as exc:
        report.check("the check ran to the end", False, str(exc)[-1500:])
    report.facts["total_seconds"] = round(time.monotonic() - started, 1)
    print(
        f"== total {report.facts['total_seconds']:.0f} s; {sum(report.checks.values())} of "
        f"{len(report.checks)} checks passed"
    )
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    return 0 if report.checks and all(report.checks.values()) else 1


def _host_cpu() -> str:
    from agent.detect.platform_facts import cpu_description

    return cpu_description()


def _shell(root: EmulatedRoot, command: str) -> int:
    result = root.run(command, check=False)
    print(result.stdout)
    print(result.stderr, file=sys.stderr)
    print(f"(exit {result.returncode}: {shlex.quote(command)})", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
