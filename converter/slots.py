"""At most `max_conversions` conversions at once on this machine, whatever `-n` says.

TensorFlow and torch each keep every core they are given busy, so four conversions on two
cores take longer than two (264 s against 196 s for nine models). Every conversion (any
worker, any run, the CLI) first takes one of the machine's slots: a lock file in a folder
shared by the user's processes. A lock is the kernel's, released when its holder dies, so a
killed worker never keeps a slot.
"""
from __future__ import annotations

import contextlib
import functools
import getpass
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import psutil

MEMORY_PER_CONVERSION = 2 * 2**30  # ResNet-18 peaks near 1.5 GB; a larger model gets a larger ceiling
POLL_SECONDS = 0.2


def _own_folder(folder: Path) -> Path:
    """The folder, if it is a real folder of this user's that no one else can write. Checked with
    lstat, not stat: a link another user made there (to /proc/self, whose entries look like taken
    slots) is the link's, not its target's, and would stall every conversion for its whole timeout."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode):
        raise PermissionError(f"{folder} is a symbolic link (uid {info.st_uid}), not a folder")
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{folder} is not a folder")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{folder} can be written by others (mode {stat.S_IMODE(info.st_mode):o})")
    return folder


@functools.lru_cache(maxsize=1)
def default_folder() -> tuple[Path, str | None]:
    """Shared by the user's processes, and why it is not the usual one. A folder someone else made
    there (to hold every lock) is not used: the user's own cache folder is, so this user's runs
    still share their slots, and the reason is said once."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's arbitrary uid has no name
        user = str(os.getuid())
    usual = Path(tempfile.gettempdir()) / f"tflite-harness-slots-{user}"
    try:
        return _own_folder(usual), None
    except OSError as exc:
        own = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tflite-harness" / "slots"
        try:
            return _own_folder(own), (f"the machine's slot folder {usual} cannot be used ({exc}): this user's runs share "
                                      f"{own} instead, and other users' conversions are not counted")
        except OSError:
            private = Path(tempfile.mkdtemp(prefix="tflite-harness-slots-"))
            return private, (f"no shared slot folder could be used ({exc}): this run counts only its own "
                             f"conversions ({private})")


def machine_slots() -> int:
    """As many conversions as there are cores, fewer if memory would not hold them."""
    by_memory = psutil.virtual_memory().total // MEMORY_PER_CONVERSION
    return max(1, min(os.cpu_count() or 1, by_memory))


class NoSlot(TimeoutError):
    """Every slot stayed taken for the whole wait."""


class SlotsUnusable(NoSlot):
    """No slot can ever be taken: every lock file is unusable (the machine's, not a wait)."""


@contextlib.contextmanager
def conversion_slot(count: int, folder: Path | None = None, on_wait: Callable[[float], None] | None = None,
                    limit: float | None = None) -> Iterator[int]:
    """Hold one of `count` slots for the body; waits (polling) while all are taken, calling
    `on_wait` with the seconds waited so far at each poll, for at most `limit` seconds."""
    from filelock import FileLock, Timeout  # here: the merge reads settings without it installed

    folder = folder or default_folder()[0]
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    first = os.getpid() % count  # waiting processes try different slots first
    order = [(first + i) % count for i in range(count)]
    start = time.monotonic()
    broken: dict[Path, str] = {}
    while True:
        for index in order:
            path = folder / f"slot-{index}.lock"
            lock = FileLock(path, preserve_lock_file=True)  # no unlink races
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            except OSError as exc:  # a folder or an unreadable file where a lock belongs: that slot is lost
                broken[path] = exc.strerror or str(exc)
                if len(broken) == count:
                    raise SlotsUnusable(f"no conversion slot can be taken: every lock file in {folder} is unusable "
                                 f"({path.name}: {broken[path]}); remove them") from None
                continue
            try:
                yield index
            finally:
                lock.release()
            return
        waited = time.monotonic() - start
        if limit is not None and waited > limit:
            raise NoSlot(f"no conversion slot came free within {limit:g} s: other conversions on this machine held "
                         f"all {count} of them (--tflite-max-conversions)")
        if on_wait is not None:
            on_wait(waited)
        time.sleep(POLL_SECONDS)
