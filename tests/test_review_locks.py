"""Lease lock files (review/locks.py): one holder at a time across processes, stale locks broken,
live ones kept by their heartbeat, a broken holder finds out before it writes. Real files and
real processes; "another host" is a lock file naming another host, as one written over NFS would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.review.locks import LeaseLocks, LockLost, LockTimeout

REPO = Path(__file__).resolve().parent.parent

WORKER = """
import sys
from pathlib import Path
from agent.review.locks import LeaseLocks
folder, counter, owner, rounds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
locks = LeaseLocks(folder, owner, lease_s=30)
for _ in range(rounds):
    with locks.hold("device-cam", wait_s=60):
        value = int(counter.read_text())  # read, modify, write: loses counts without the lock
        counter.write_text(str(value + 1))
locks.close()
"""


def test_one_holder_at_a_time_across_processes(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / "locks"), str(counter), f"r{i}", "150"], env=env
        )
        for i in range(3)
    ]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert counter.read_text() == "450"
    assert list((tmp_path / "locks").iterdir()) == [], "every lock file was released"


def foreign_lock(folder: Path, name: str, *, host: str, pid: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    path.write_text(
        json.dumps({"owner": "other-receiver", "host": host, "pid": pid, "token": "t", "beat": 0})
    )
    return path


def test_a_dead_holder_on_this_host_is_broken_at_once(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    locks = LeaseLocks(tmp_path, "me", lease_s=3600)
    foreign_lock(tmp_path, "device-cam", host=locks.host, pid=gone.pid)
    locks.acquire("device-cam", wait_s=30)  # not an hour: its process no longer exists
    assert locks.broken == 1
    locks.verify("device-cam")
    locks.close()


def test_a_silent_holder_on_another_host_is_broken_after_its_lease(tmp_path):
    foreign_lock(tmp_path, "device-cam", host="other-host.example", pid=os.getpid())
    locks = LeaseLocks(tmp_path, "me", lease_s=1.0)
    locks.acquire("device-cam", wait_s=60)
    assert locks.broken == 1
    body = json.loads((tmp_path / "device-cam.lock").read_text())
    assert body["owner"] == "me" and body["pid"] == os.getpid()
    locks.close()
    assert not (tmp_path / "device-cam.lock").exists()


def test_a_live_holder_keeps_its_lock_by_its_heartbeat(tmp_path):
    holder = LeaseLocks(tmp_path, "holder", lease_s=3.0)
    waiter = LeaseLocks(tmp_path, "waiter", lease_s=3.0)
    holder.acquire("device-cam", wait_s=1)
    with pytest.raises(LockTimeout, match="holder"):
        waiter.acquire("device-cam", wait_s=7.0)  # over two leases: only the heartbeat keeps it
    assert waiter.broken == 0
    assert json.loads((tmp_path / "device-cam.lock").read_text())["beat"] >= 2
    holder.verify("device-cam")
    holder.release("device-cam")
    waiter.acquire("device-cam", wait_s=5)
    waiter.close()
    holder.close()


def test_a_holder_stuck_past_its_hold_limit_loses_the_lock_and_finds_out(tmp_path):
    stuck = LeaseLocks(tmp_path, "stuck", lease_s=1.0, max_hold_s=0.0)  # stops beating at once
    other = LeaseLocks(tmp_path, "other", lease_s=1.0)
    stuck.acquire("device-cam", wait_s=1)
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (other.acquire("device-cam", wait_s=60), taken.set()))
    thread.start()
    assert taken.wait(60)
    thread.join()
    with pytest.raises(LockLost):
        stuck.verify("device-cam")  # before its next write, the stuck holder learns it lost the lock
    stuck.release("device-cam")  # and does not delete the new holder's lock
    other.verify("device-cam")
    other.close()
    stuck.close()
