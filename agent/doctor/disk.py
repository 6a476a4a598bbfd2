"""Doctor's disk area: free space against the harvest quota, and the output folders and the outbox
are writable (a probe file is written and removed; nothing is created)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from agent.config import AgentConfig
from agent.doctor.checks import MB, Check, CheckFunction, DoctorContext, Status, problem


def _existing_ancestor(path: Path) -> Path:
    current = path
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def check_disk(config: AgentConfig) -> Check:
    """Free space on the disk holding ``output.dir`` against ``harvest.quota_mb`` and ``min_free_mb``."""
    out = config.output
    harvest = config.harvest
    data_dir = out.data_dir()
    try:
        usage = shutil.disk_usage(_existing_ancestor(data_dir))
    except OSError as exc:
        return problem("disk space", True, f"cannot read free space for {data_dir}: {exc.strerror}")
    free_mb = usage.free / MB
    used_mb = (_folder_bytes(out.frames_dir()) + _folder_bytes(out.vott_dir())) / MB
    data = {
        "free_mb": round(free_mb, 1),
        "used_mb": round(used_mb, 1),
        "quota_mb": harvest.quota_mb,
        "min_free_mb": harvest.min_free_mb,
    }
    facts = (
        f"{free_mb:,.0f} MB free for {data_dir}; kept frames use {used_mb:,.1f} MB of harvest.quota_mb "
        f"{harvest.quota_mb:g}"
        + (" (no quota)" if harvest.quota_mb == 0 else "")
        + f", harvest.min_free_mb {harvest.min_free_mb:g}"
    )
    if free_mb < harvest.min_free_mb:
        return problem(
            "disk space",
            True,
            f"{facts}: below min_free_mb, so no frame would be kept",
            "free space on that disk, move output.dir to a bigger one, or lower harvest.min_free_mb",
            data=data,
        )
    room_mb = free_mb - harvest.min_free_mb
    if harvest.quota_mb and harvest.quota_mb - used_mb > room_mb:
        fits = max(0.0, used_mb + room_mb)
        return problem(
            "disk space",
            False,
            f"{facts}: the disk reaches min_free_mb after {room_mb:,.0f} MB more, before the quota is full",
            f"lower harvest.quota_mb to {fits:,.0f} or less (or free space), so the quota, not the "
            "free-space floor, decides what is evicted",
            data=data,
        )
    return Check("disk space", Status.OK, facts, required=True, data=data)


def probe_writable(folder: Path) -> tuple[bool, str]:
    """Whether files can be created in ``folder`` (a temp file is written and removed; a folder that does
    not exist yet is judged by the nearest existing parent, where the agent would create it)."""
    existing = _existing_ancestor(folder)
    if not existing.is_dir():
        return False, f"{existing} is a file, not a folder, so {folder} cannot be created"
    try:
        fd, name = tempfile.mkstemp(prefix=".edge-agent-doctor-", dir=existing)
        try:
            os.write(fd, b"edge-agent doctor\n")
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return False, f"cannot write in {existing}: {exc.strerror}"
    if existing == folder:
        return True, f"{folder} is writable"
    return True, f"{folder} does not exist yet; the agent creates it in {existing} (writable)"


def check_writable(config: AgentConfig) -> list[Check]:
    """The output, frames and VoTT folders are writable, and the outbox (when MQTT is on)."""
    from agent.app import mqtt_settings

    out = config.output
    checks = []
    folders = [
        ("output folder", out.data_dir()),
        ("frames folder", out.frames_dir()),
        ("vott folder", out.vott_dir()),
    ]
    for name, folder in folders:
        ok, detail = probe_writable(folder)
        if ok:
            checks.append(Check(name, Status.OK, detail, required=True))
        else:
            checks.append(
                problem(
                    name,
                    True,
                    detail,
                    "set output.dir to a folder the agent's user can write (the systemd unit's "
                    "ReadWritePaths must include it)",
                )
            )
    if not config.mqtt.enabled:
        checks.append(Check("outbox", Status.SKIP, "mqtt.enabled is false"))
        return checks
    outbox = Path(mqtt_settings(config).outbox.path).expanduser()
    ok, detail = probe_writable(outbox.parent)
    if ok and outbox.exists():
        try:
            with open(outbox, "ab"):
                pass
            detail = f"{outbox} exists and is writable"
        except OSError as exc:
            ok, detail = False, f"{outbox} cannot be written: {exc.strerror}"
    elif ok:
        detail = f"{outbox} will be created ({detail})"
    if ok:
        checks.append(Check("outbox", Status.OK, detail, required=True))
    else:
        checks.append(
            problem(
                "outbox", True, detail, "set mqtt.outbox.path to a writable place (relative: in output.dir)"
            )
        )
    return checks


def _check_disk_row(context: DoctorContext) -> list[Check]:
    return [check_disk(context.config)]


def _check_writable_rows(context: DoctorContext) -> list[Check]:
    return check_writable(context.config)


CHECKS: list[CheckFunction] = [_check_disk_row, _check_writable_rows]
