"""The conversion child never outlives the run that started it.

The child has its own session (so its whole process group can be killed at once), which
also means that nothing kills it when pytest, an xdist worker or the CLI dies: a cancelled
CI job would leave it converting, and a deliverable nobody reports could appear later.
Two guards, from the child's side:
- Linux: the kernel sends SIGKILL the moment the parent dies (PR_SET_PDEATHSIG);
- everywhere: a watchdog thread checks every guardian (the parent, and the xdist controller
  above a worker) and kills the child's whole process group once one of them is gone.
The parent, for its part, turns SIGTERM into an interrupt that kills the group (see
`terminate_on_sigterm`), and copies the deliverable itself, so only a live run delivers.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time

import psutil

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5


def _kill_own_group() -> None:
    if hasattr(os, "killpg") and os.getpgid(0) == os.getpid():  # only a group this child leads
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)  # onnxsim and other grandchildren too
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(70)


def die_with_parent_on_linux(parent: int) -> None:
    """Killed by the kernel the moment `parent` dies (already gone: this process ends now)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        _kill_own_group()


def hold(guardians: list[int], parent: int | None = None) -> None:
    """Called first thing in the child: die as soon as its parent or any guardian process is gone."""
    if not guardians:
        return
    die_with_parent_on_linux(guardians[0] if parent is None else parent)
    watched = []
    for pid in guardians:
        try:
            watched.append(psutil.Process(pid))  # remembers the start time: a reused pid is not alive
        except psutil.NoSuchProcess:
            _kill_own_group()

    def alive(proc: psutil.Process) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def watch() -> None:
        while all(alive(p) for p in watched):
            time.sleep(WATCH_SECONDS)
        _kill_own_group()

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def guardians_of_this_process() -> list[int]:
    """This process, and the xdist controller when this is a worker (its parent)."""
    pids = [os.getpid()]
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pids.append(os.getppid())
    return pids


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the code runs, so that every `finally` (killing a child's
    process group, writing what is known) runs as on Ctrl-C."""


_terminating = threading.Event()
_by: list[str] = []  # the signal that ended the run


def terminating() -> bool:
    """SIGTERM (or, in a batch, SIGINT) has come: nothing more is delivered or started, whatever was under way."""
    return _terminating.is_set()


def terminated_by() -> str:
    """The name of the signal that ended the run ('SIGTERM' before any came)."""
    return _by[0] if _by else "SIGTERM"


BATCH_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT") if hasattr(signal, name))
# what a signal's handler is when no one else has set one
_UNSET = {getattr(signal, "SIGTERM", None): (signal.SIG_DFL, None), signal.SIGINT: (signal.default_int_handler, None)}


def terminate_on_sigterm(on_signal=None, signals: tuple = (getattr(signal, "SIGTERM", None),)) -> None:
    """Install once in the main thread of a process that starts conversion children. `on_signal`
    runs first (the xdist controller passes the signal on to its workers). A batch passes
    BATCH_SIGNALS: `kill -INT` to the controller alone (a CI runner's cancel) must stop the workers
    too, or they deliver what they were converting after it and no summary is written."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (s for s in signals if s is not None):
        if signal.getsignal(sig) not in _UNSET.get(sig, (signal.SIG_DFL, None)):
            continue  # someone else's handler (or ours, installed already): theirs to keep

        def handler(signum, frame, default=signal.getsignal(sig)):
            _terminating.set()
            if not _by:
                _by.append(signal.Signals(signum).name)
            signal.signal(signum, default if default is not None else signal.SIG_DFL)  # a second one: as usual
            if on_signal is not None:
                with contextlib.suppress(Exception):
                    on_signal()
            raise Terminated(f"terminated by {signal.Signals(signum).name}")

        signal.signal(sig, handler)


def signal_children(sig: int = getattr(signal, "SIGTERM", 15)) -> None:
    """Pass a signal on to this process's direct children (an xdist controller's workers)."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            child.send_signal(sig)
