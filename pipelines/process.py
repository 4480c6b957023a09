"""Process plumbing of an lmforge command: what it does to the interpreter and the OS, not what it runs.

Garbage-collector thresholds for a process that imports large libraries, the owner stamp its children inherit and
the reaping of what a killed command left behind, a copy of the console at the file-descriptor level, SIGTERM as an
exception that unwinds every ``with`` block, and an exit that skips the interpreter's module teardown. What a command
runs, and how its errors reach the user, is :mod:`pipelines.runner`.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GC_THRESHOLD = (50_000, 20, 20)
"""Garbage-collector thresholds of an lmforge process (CPython's default: 700, 10, 10). A stage imports large
libraries (Great Expectations, MLflow, Prefect and its server module, pandas: about 750k objects); at the default
thresholds the collector ran about 1,000 times during those imports, 7 of them full collections over every object,
for 1-2 of the 6-8 CPU-s the imports take here. At these it runs a few dozen times and never fully; cycles are
still collected."""


def tune_gc() -> None:
    """Set this process's collector thresholds to :data:`GC_THRESHOLD` (before the large imports)."""
    gc.set_threshold(*GC_THRESHOLD)


OWNER_ENV = "LMFORGE_OWNER"
"""``PID:START_TIME`` of the lmforge command, inherited by every process it starts (the ephemeral Prefect API)."""


def mark_owner() -> None:
    """Stamp this command on the environment its children inherit, so a later command can tell their orphans."""
    import psutil

    me = psutil.Process()
    os.environ[OWNER_ENV] = f"{me.pid}:{me.create_time():.3f}"


_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: kept across exec\n"
    "if os.getppid() != int(sys.argv[1]):  # the parent died before the line above: nobody to serve\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n")


def die_with_parent(cmd: list[str]) -> list[str]:
    """``cmd`` wrapped so that the kernel kills it (SIGKILL) when this process dies, however it dies (SIGKILL
    included): a tiny Python prologue asks Linux for a parent-death signal, then execs ``cmd`` (``cmd[0]`` a path).
    Elsewhere than Linux, ``cmd`` unchanged (:func:`reap_orphans` still stops what a killed command left).

    The signal follows the thread that started the child: call this from the main thread of a command."""
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]


def reap_orphans(root: Path) -> list[int]:
    """Stop what an earlier lmforge command in this checkout started and left behind when it was killed with
    SIGKILL (its ephemeral Prefect API keeps serving on 127.0.0.1 otherwise): processes whose environment names
    this checkout's Prefect home and an owner that is gone. Returns their pids."""
    import psutil

    home, reaped = str(root / ".prefect"), []
    for proc in psutil.process_iter(["pid"]):
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        owner = env.get(OWNER_ENV)
        if not owner or env.get("PREFECT_HOME") != home or proc.pid == os.getpid():
            continue
        pid, _, started = owner.partition(":")
        try:
            alive = abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
        except (psutil.Error, ValueError):
            alive = False
        if not alive:
            proc.terminate()
            reaped.append(proc.pid)
    psutil.wait_procs([psutil.Process(p) for p in reaped if psutil.pid_exists(p)], timeout=10)
    return reaped


@contextmanager
def tee_console(path: Path) -> Iterator[Path]:
    """Copy everything written to this process's stdout and stderr into ``path`` (appending) while the console
    still shows it. The copy is made at the file-descriptor level, so what child processes (training, DVC, the
    Prefect server) write straight to the inherited descriptors is in the file too."""
    import threading

    path.parent.mkdir(parents=True, exist_ok=True)
    sink = path.open("ab", buffering=0)
    lock = threading.Lock()
    saved: dict[int, int] = {}
    pumps = []

    def pump(read_end: int, console: int) -> None:
        while chunk := os.read(read_end, 1 << 16):
            view = memoryview(chunk)
            while view:
                view = view[os.write(console, view):]
            with lock:
                sink.write(chunk)
        os.close(read_end)

    sys.stdout.flush()
    sys.stderr.flush()
    for fd in (1, 2):
        saved[fd] = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        pumps.append(threading.Thread(target=pump, args=(read_end, saved[fd]), daemon=True))
        pumps[-1].start()
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, console in saved.items():
            os.dup2(console, fd)  # the pipes' last write ends close: the pumps drain them and stop
        deadline = time.monotonic() + 5  # a child still holding a write end must not hold up the exit
        for thread in pumps:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        for console in saved.values():
            os.close(console)
        sink.close()


def exit_without_teardown(code: int) -> int:
    """Let the interpreter end this command with ``code`` right after its exit handlers, without tearing down
    its modules; returns ``code``. Only for a process's own command line: the process ends with ``code``.

    A stage's process holds about half a million objects from the libraries it imported (Great Expectations, MLflow,
    Prefect, pandas); freeing them one module at a time after the exit handlers took 1.7 CPU-s and 3.5 s here, at the
    end of every command, and writes nothing. So a last ``atexit`` handler, registered here (it runs first), runs
    every other exit handler itself (in their order: logging's shutdown, Prefect's, MLflow's, temporary directories'
    finalizers...), flushes the standard streams and ends the process with ``os._exit(code)``. By then the
    interpreter has already joined its non-daemon threads and run the ``threading`` exit hooks (Prefect's queue
    services drain there). Without CPython's ``atexit._run_exitfuncs`` it does nothing and the exit is the usual one.
    """
    import atexit

    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if run_exit_handlers is None:
        return code

    def end_now() -> None:
        atexit.unregister(end_now)
        try:
            run_exit_handlers()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError, AttributeError):
                    pass
            os._exit(code)

    atexit.register(end_now)
    return code


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every ``with`` block and exit handler runs (MLflow runs end
    FAILED, the ephemeral Prefect API and the training processes are stopped) instead of dying on the spot."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


_SIGNALS: list[int] = []  # the read end of the wakeup pipe, once guarded() set it up


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if a SIGTERM arrived whose exception was lost.

    A handler's exception that is raised while the main thread runs a weakref or GC callback is printed as
    "Exception ignored" and dropped (seen with Prefect's own SIGTERM handler: the run went on and exited 0). The
    signal module still writes every signal's number to the wakeup fd, so the pipeline checks it between stages and
    before it reports success."""
    import signal

    if not _SIGNALS:
        return
    try:
        received = os.read(_SIGNALS[0], 1024)
    except BlockingIOError:
        return
    if signal.SIGTERM in received:
        raise Terminated()


def catch_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread, and record every signal on a wakeup pipe that
    :func:`raise_if_terminated` reads."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    _watch_signals()


def _watch_signals() -> None:
    import signal

    if _SIGNALS:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    os.set_blocking(write_end, False)
    try:
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:  # not the main thread: nothing to watch
        return
    _SIGNALS.append(read_end)
