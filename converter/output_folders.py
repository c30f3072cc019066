"""A run's output folders: checked before the first conversion, and held by one run at a time.

Two runs on the same folders (two CI jobs on one runner) would clear each other's artifacts
and report each other's results; a folder that cannot be written would let every model
convert and then fail; a folder another user can write would let them choose what the
conversion child runs and what passes. All are refused up front, in one line.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from .firmware import remove_c_array

LOCK_NAME = ".tflite-harness.lock"
OWNER_NAME = ".tflite-harness.owner.json"


class OutputsError(Exception):
    """One line saying which folder cannot be used, and why."""


def check_writable(folders: dict[str, Path]) -> None:
    """Every folder (what -> path) exists or can be created, and takes a file."""
    for what, folder in folders.items():  # all before creating any: a refused run leaves nothing behind
        for path in (Path(folder), *Path(folder).parents):
            if path.exists():
                if not path.is_dir():
                    raise OutputsError(f"{what} {folder} is {'a file' if path == Path(folder) else f'under a file, {path}'}"
                                       ", not a folder")
                break
    for what, folder in folders.items():
        try:
            Path(folder).mkdir(mode=0o755, parents=True, exist_ok=True)  # writable by no one else (check_private)
            with tempfile.TemporaryFile(dir=folder, prefix=".write-probe-"):
                pass
        except OSError as exc:
            raise OutputsError(f"{what} {folder} cannot be written ({exc.strerror or exc})") from None


def check_private(folders: dict[str, Path], sticky_ok: tuple[str, ...] = ()) -> None:
    """Every folder is this user's and no one else can write it, nor swap it through a folder above:
    the conversion child reads its job from the artifacts folder and the parent its result, so
    whoever can write there chooses the code the child runs and what ships as verified. Above
    them, and for the folders named in `sticky_ok` (the reports folder: a tmpfs is mounted 1777),
    a folder others may write is allowed only with the sticky bit (/tmp), where no one renames or
    replaces another's entry (what matters inside it, artifacts/, is checked itself)."""
    if not hasattr(os, "getuid"):
        return
    me = os.getuid()
    for what, folder in folders.items():
        folder = Path(folder).absolute()
        info = os.lstat(folder)
        if stat.S_ISLNK(info.st_mode):
            info = os.stat(folder)  # a link the user made is theirs to make; where it leads is checked
        if info.st_uid != me:
            raise OutputsError(f"{what} {folder} belongs to another user (uid {info.st_uid}): whoever owns it "
                               "chooses what the conversion runs and what passes; use a folder of your own")
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (what in sticky_ok and info.st_mode & stat.S_ISVTX):
            raise OutputsError(f"{what} {folder} can be written by others (mode {stat.S_IMODE(info.st_mode):o}): "
                               f"anyone could plant a conversion's job or result there; chmod go-w {folder}")
        for above in Path(os.path.realpath(folder)).parents:
            info = os.stat(above)
            if info.st_uid not in (me, 0):
                raise OutputsError(f"{what} {folder} is inside {above}, which belongs to another user (uid "
                                   f"{info.st_uid}): they could swap it for their own; use a folder of your own")
            if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
                raise OutputsError(f"{what} {folder} is inside {above}, which anyone can write (mode "
                                   f"{stat.S_IMODE(info.st_mode):o}, not sticky): anyone could swap it for their own")


class RunLock:
    """An exclusive lock on each output folder for the life of a run (released by the OS if the
    run is killed). A second run is refused with the first run's pid and start time."""

    def __init__(self, folders: dict[str, Path]):
        unique = {}
        for what, folder in folders.items():
            unique.setdefault(Path(folder).resolve(), what)
        self.folders = [(what, path) for path, what in sorted(unique.items())]
        self._held: list[FileLock] = []

    def acquire(self) -> "RunLock":
        for what, folder in self.folders:
            lock = FileLock(str(folder / LOCK_NAME))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                self.release()
                raise OutputsError(f"{what} {folder} is in use by another run ({_owner(folder)}): wait for it "
                                   "to end, or give this run its own --tflite-reports-dir and --tflite-dir") from None
            self._held.append(lock)
            _write_owner(folder)
        return self

    def release(self) -> None:
        while self._held:
            lock = self._held.pop()
            with contextlib.suppress(OSError):
                (Path(lock.lock_file).parent / OWNER_NAME).unlink()
            lock.release()


def _write_owner(folder: Path) -> None:
    owner = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
             "command": " ".join(sys.argv)[:200]}
    with contextlib.suppress(OSError):
        (folder / OWNER_NAME).write_text(json.dumps(owner))


def _owner(folder: Path) -> str:
    try:
        owner = json.loads((folder / OWNER_NAME).read_text())
        return f"pid {owner['pid']}, started {owner['started']}: {owner['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its details are unknown"


def prune_unclaimed(tflite_dir: Path, claimed: set[Path], skip=()) -> str | None:
    """Remove every deliverable in the folder that belongs to no model of this run (a model removed
    or renamed since it was delivered: no run verifies it again, and the folder must hold only
    verified files), and say which, in one line. Hidden files, links and the folders in `skip` (a
    cache kept inside it) are left alone."""
    claimed = {Path(p).absolute() for p in claimed}
    skipped = {Path(os.path.abspath(f)) for f in skip if f is not None}
    removed = []
    for root, folders, files in os.walk(Path(tflite_dir).absolute()):
        folders[:] = [f for f in folders if not f.startswith(".") and Path(root) / f not in skipped]
        for name in files:
            path = Path(root) / name
            if name.endswith(".tflite") and not name.startswith(".") and not path.is_symlink() and path not in claimed:
                with contextlib.suppress(OSError):  # gone meanwhile, or not this user's to remove
                    path.unlink()
                    removed.append(path.relative_to(Path(tflite_dir).absolute()).as_posix())
                    remove_c_array(path)  # its C array for TFLite Micro, if the harness wrote one
    if not removed:
        return None
    shown = ", ".join(sorted(removed)[:5]) + (f" and {len(removed) - 5} more" if len(removed) > 5 else "")
    return (f"removed {len(removed)} deliverable(s) of models no longer in the models folders from {tflite_dir}: "
            f"{shown} (no run verifies them any more)")


def disjoint(folders: dict[str, Path]) -> None:
    """No output folder is another or inside another: a model's deliverable path would be another
    model's artifacts folder, and a run's clearing of one would reach into the other."""
    items = [(what, Path(os.path.realpath(folder))) for what, folder in folders.items()]
    for i, (what, folder) in enumerate(items):
        for other, place in items[i + 1:]:
            if folder == place or folder in place.parents or place in folder.parents:
                how = "is" if folder == place else "overlaps"
                raise OutputsError(f"the {what} and the {other} must be apart: {folders[what]} {how} "
                                   f"{folders[other]}; give --tflite-dir and --tflite-reports-dir folders of their own")


def prepare(tflite_dir: Path, reports_dir: Path, *, lock: bool = True) -> RunLock | None:
    """Check every output folder, then (with lock) hold them for this run."""
    folders = {"deliverables folder": Path(tflite_dir), "reports folder": Path(reports_dir)}
    disjoint(folders)
    check_writable({**folders, "artifacts folder": Path(reports_dir) / "artifacts"})
    check_private({**folders, "artifacts folder": Path(reports_dir) / "artifacts"}, sticky_ok=("reports folder",))
    return RunLock(folders).acquire() if lock else None
