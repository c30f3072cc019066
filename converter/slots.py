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
    return Path(tempfile.gettempdir()) / f"tflite-harness-slots-{getpass.getuser()}"


def machine_slots() -> int:
    """As many conversions as there are cores, fewer if memory would not hold them."""
    by_memory = psutil.virtual_memory().total // MEMORY_PER_CONVERSION
    return max(1, min(os.cpu_count() or 1, by_memory))


@contextlib.contextmanager
def conversion_slot(count: int, folder: Path | None = None,
                    on_wait: Callable[[float], None] | None = None) -> Iterator[int]:
    """Hold one of `count` slots for the body; waits (polling) while all are taken, calling
    `on_wait` with the seconds waited so far at each poll."""
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
        if on_wait is not None:
            on_wait(time.monotonic() - start)
        time.sleep(POLL_SECONDS)
