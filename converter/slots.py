"""At most `max_conversions` conversions at once on this machine, whatever `-n` says.

TensorFlow and torch each keep every core they are given busy, so four conversions on two
cores take longer than two (264 s against 196 s for nine models). Every conversion (any
worker, any run, the CLI) first takes one of the machine's slots: a lock file in a folder
shared by the user's processes. A lock is the kernel's, released when its holder dies, so a
killed worker never keeps a slot.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil
from filelock import FileLock, Timeout

MEMORY_PER_CONVERSION = 2 * 2**30  # ResNet-18 peaks near 1.5 GB; a larger model gets a larger ceiling
POLL_SECONDS = 0.2


def default_folder() -> Path:
    """Shared by the user's processes. A folder someone else made (to hold every lock) is not
    used: this process then counts only its own conversions."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's arbitrary uid has no name
        user = str(os.getuid())
    folder = Path(tempfile.gettempdir()) / f"tflite-harness-slots-{user}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        if hasattr(os, "getuid") and folder.stat().st_uid != os.getuid():
            raise PermissionError(f"{folder} belongs to another user")
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="tflite-harness-slots-"))
    return folder


def machine_slots() -> int:
    """As many conversions as there are cores, fewer if memory would not hold them."""
    by_memory = psutil.virtual_memory().total // MEMORY_PER_CONVERSION
    return max(1, min(os.cpu_count() or 1, by_memory))


class NoSlot(TimeoutError):
    """Every slot stayed taken for the whole wait."""


@contextlib.contextmanager
def conversion_slot(count: int, folder: Path | None = None, on_wait: Callable[[float], None] | None = None,
                    limit: float | None = None) -> Iterator[int]:
    """Hold one of `count` slots for the body; waits (polling) while all are taken, calling
    `on_wait` with the seconds waited so far at each poll, for at most `limit` seconds."""
    folder = folder or default_folder()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    first = os.getpid() % count  # waiting processes try different slots first
    order = [(first + i) % count for i in range(count)]
    start = time.monotonic()
    while True:
        for index in order:
            lock = FileLock(folder / f"slot-{index}.lock", preserve_lock_file=True)  # no unlink races
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield index
            finally:
                lock.release()
            return
        waited = time.monotonic() - start
        if limit is not None and waited > limit:
            raise NoSlot(f"no conversion slot came free within {limit:g} s: other conversions on this machine held "
                         f"all {count} of them (--max-conversions)")
        if on_wait is not None:
            on_wait(waited)
        time.sleep(POLL_SECONDS)
