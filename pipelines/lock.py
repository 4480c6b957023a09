"""The workspace lock: one command at a time writes a checkout's outputs, dvc.lock, staging and checkpoint directories.

Every command that writes the workspace (``lmforge run``, ``python -m flows.STAGE``, ``lmforge promote``, a scheduled
run) holds ``.lmforge/run.lock`` while it works; ``lmforge status``, ``models`` and ``ui`` only read and never take
it. The lock is an OS file lock (filelock: ``flock`` on POSIX), so the kernel releases it when its holder dies, a
SIGKILL included. Beside it, ``.lmforge/run.json`` names the holder (pid, host, start, command) for the message a
refused command prints; a holder that dies without removing it leaves it stale, and the next holder says so and
overwrites it. A stage that a holder runs in a child process (``dvc repro`` under a holder, say) finds the holder's
marker in its environment and does not lock again: it would wait for its own parent.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

LOCK_DIR = Path(".lmforge")
"""Under the checkout; git- and dvc-ignored."""
LOCK_FILE = LOCK_DIR / "run.lock"
HOLDER_FILE = LOCK_DIR / "run.json"
HOLDER_ENV = "LMFORGE_WORKSPACE_LOCK"
"""``LOCK_PATH|PID:START`` of the process holding the lock, inherited by every process it starts."""

log = logging.getLogger("pipelines.lock")


class WorkspaceBusyError(Exception):
    """Another lmforge command holds the checkout's workspace lock. Exit code 2."""

    exit_code = 2


def _me() -> tuple[int, float]:
    import psutil

    proc = psutil.Process()
    return proc.pid, proc.create_time()


def _alive(pid: int, started: float) -> bool:
    import psutil

    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0  # a reused pid is another process
    except (psutil.Error, ValueError, OverflowError):
        return False


def _inherited(lock_path: Path) -> bool:
    """Whether an ancestor of this process holds this lock (its marker is in our environment and it is alive)."""
    import psutil

    path, _, owner = os.environ.get(HOLDER_ENV, "").partition("|")
    if path != str(lock_path):
        return False
    pid, _, started = owner.partition(":")
    try:
        holder = (int(pid), float(started))
    except ValueError:
        return False
    ancestors = {p.pid for p in psutil.Process().parents()}
    return holder[0] in ancestors and _alive(*holder)


def read_holder(root: Path) -> dict[str, Any] | None:
    """What ``.lmforge/run.json`` says about the holder (None when absent or unreadable)."""
    try:
        data = json.loads((root / HOLDER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(holder: dict[str, Any] | None, current: bool = True) -> str:
    """``pid 123 on host h since 2026-12-03 06:00:00 (lmforge run collect)``, or why it is not known (with
    ``current``: the record is that of the holder now, unless its process is gone)."""
    if not holder:
        return "a process that has not recorded itself yet (it is just starting)"
    try:
        gone = current and not _alive(int(holder["pid"]), float(holder["pid_started"]))
    except (KeyError, TypeError, ValueError):
        gone = False
    if gone:  # the record of a killed holder, not yet replaced by the one that holds the lock now
        return f"a process that is just starting (the record left by pid {holder.get('pid')} is stale)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')} "
            f"({holder.get('command')})")


def _write_holder(root: Path, command: str) -> None:
    pid, started = _me()
    data = {"pid": pid, "pid_started": round(started, 3), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command, "cwd": os.getcwd()}
    tmp = root / LOCK_DIR / f".run.json.{pid}"
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, root / HOLDER_FILE)


def command_line() -> str:
    """How this process was started, for the holder file (``lmforge run collect``, ``python -m flows.clean``)."""
    argv = list(sys.argv)
    name = Path(argv[0]).name if argv else "python"
    if name == "cli.py":
        name = "lmforge"
    elif name.endswith(".py") and "flows" in Path(argv[0]).parts:
        name = f"python -m flows.{Path(argv[0]).stem}"
    return shlex.join([name, *argv[1:]])


def _busy(root: Path, waited: str) -> str:
    return (f"the workspace {root} is in use by another lmforge command{waited}: {describe(read_holder(root))}. "
            "Two runs must not write the same outputs, dvc.lock and checkpoints; let it finish, or run again with "
            "--wait [SECONDS] to queue behind it")


@contextmanager
def workspace_lock(root: Path, command: str | None = None, wait: float = 0) -> Iterator[None]:
    """Hold the workspace lock of the checkout at ``root`` for the ``with`` body.

    Args:
        root: the checkout.
        command: what the holder does, for the message another command prints (default: this process's command line).
        wait: seconds to wait for a busy lock (0: refuse at once; ``math.inf``: wait as long as it takes).

    Raises:
        WorkspaceBusyError: another command holds it (still, after ``wait`` seconds); the message names it.
    """
    from filelock import FileLock, Timeout

    lock_path = (root / LOCK_FILE).resolve()
    if _inherited(lock_path):  # our parent holds it and runs us: locking again would wait for ourselves
        yield
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    # the lock file stays: removing it on release lets a waiter lock the old inode while a newcomer locks a new one
    lock = FileLock(str(lock_path), is_singleton=False, thread_local=False, preserve_lock_file=True)
    timeout = -1 if math.isinf(wait) else max(0.0, float(wait))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if timeout == 0:
            raise WorkspaceBusyError(_busy(root, "")) from None
        print(f"lmforge: the workspace is in use by {describe(read_holder(root))}; waiting for it"
              + ("" if timeout < 0 else f" (at most {timeout:g} s)"), file=sys.stderr, flush=True)
        try:
            lock.acquire(timeout=timeout, poll_interval=0.2)
        except Timeout:
            raise WorkspaceBusyError(_busy(root, f" after waiting {timeout:g} s")) from None
    try:
        stale = read_holder(root)
        if stale:  # the lock was free, so whoever wrote this ended without removing it (SIGKILL, power loss)
            log.warning("the workspace lock's last holder (%s) ended without releasing it (killed?); its record was "
                        "stale and is replaced", describe(stale, current=False))
        _write_holder(root, command or command_line())
        pid, started = _me()
        previous = os.environ.get(HOLDER_ENV)
        os.environ[HOLDER_ENV] = f"{lock_path}|{pid}:{started:.3f}"
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(HOLDER_ENV, None)
            else:
                os.environ[HOLDER_ENV] = previous
            try:
                (root / HOLDER_FILE).unlink()
            except OSError:
                pass
    finally:
        lock.release(force=True)
