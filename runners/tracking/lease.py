"""One live run per config hash: an exclusive lease, held for the run's lifetime.

The lease is an OS file lock (filelock: flock on Linux) on `<cache_dir>/leases/<config_hash>.lock`, with a JSON
sidecar `<config_hash>.json` (pid, host, start time) for messages. The kernel releases the lock when its process
ends in any way (exit, exception, SIGKILL, OOM killer), so no heartbeat is needed and a dead owner never blocks.

Policy for a second copy of a running config: **wait, then skip if finished**. The copy logs who holds the lease
and blocks until it is released; then (runners/run.py) a FINISHED run of the config is skipped as usual, and
otherwise the copy takes over: an unfinished run left by a dead owner is resumed from its checkpoint or closed
as KILLED. `$SEQREC_LEASE_TIMEOUT` (seconds) bounds the wait: past it the copy refuses with ConfigBusy, naming
the owner. Limits: the lock is as good as the filesystem's locking (local disks: exact; NFS: only where flock is
supported across clients), and copies only see each other when they share the cache dir.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from datasets.atomic import atomic_write_text

log = logging.getLogger(__name__)
TIMEOUT_ENV = "SEQREC_LEASE_TIMEOUT"


class ConfigBusy(RuntimeError):
    """Another live process holds the lease of this config hash."""


def lease_paths(cache_dir: Path, chash: str) -> tuple[Path, Path]:
    """(lock file, owner sidecar) of config hash `chash`."""
    folder = Path(cache_dir) / "leases"
    return folder / f"{chash}.lock", folder / f"{chash}.json"


def owner_of(cache_dir: Path, chash: str) -> dict:
    """The sidecar of the lease's last taker ({} if none or unreadable)."""
    try:
        return json.loads(lease_paths(cache_dir, chash)[1].read_text())
    except (OSError, ValueError):
        return {}


def describe(owner: dict) -> str:
    if not owner:
        return "another process (owner unknown)"
    return f"pid {owner.get('pid')} on host {owner.get('host')} since {owner.get('started')}"


def wait_timeout() -> float:
    """Seconds to wait for a busy lease: $SEQREC_LEASE_TIMEOUT, or -1 (forever)."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    return float(value) if value else -1


@contextmanager
def config_lease(cache_dir: Path, chash: str, timeout: float | None = None) -> Iterator[bool]:
    """Hold the lease of `chash` for the block; yields whether another process had to be waited for.
    Raises ConfigBusy when it is still held after `timeout` seconds (None: $SEQREC_LEASE_TIMEOUT; -1: forever)."""
    lock_path, info_path = lease_paths(cache_dir, chash)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), thread_local=False)
    timeout = wait_timeout() if timeout is None else timeout
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        owner = describe(owner_of(cache_dir, chash))
        log.warning("config %s is already being run by %s (lease %s): waiting for it to end", chash, owner,
                    lock_path)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise ConfigBusy(f"config {chash} is already being run by {owner}: lease {lock_path} still held after "
                             f"{timeout:g} s (${TIMEOUT_ENV}); not starting a second run") from None
    try:
        atomic_write_text(info_path, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
        yield waited
    finally:
        info_path.unlink(missing_ok=True)
        lock.release()
