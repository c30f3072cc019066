"""A real second user for the tests where another user is the attacker (made with `useradd` as
root; the test is skipped, saying why, where none can be made)."""
from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

NAME = "tflite-harness-other"


@functools.lru_cache(maxsize=1)
def _other_uid() -> int | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(NAME).pw_uid
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        return None
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NAME],
                   capture_output=True)
    try:
        return pwd.getpwnam(NAME).pw_uid
    except KeyError:
        return None


def other_uid() -> int:
    """The second user's uid; skips the test where none can be made."""
    uid = _other_uid()
    if uid is None:
        pytest.skip("needs root and useradd to make a second user (the attacker)")
    return uid


def as_other(uid: int, *command: str) -> subprocess.CompletedProcess:
    """A command run by the other user, for real (their own uid and gid)."""
    return subprocess.run(list(command), user=uid, group=pwd.getpwuid(uid).pw_gid, capture_output=True, text=True)


@contextlib.contextmanager
def reachable_folder():
    """A scratch folder the other user can reach (pytest's own are private to this user), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="tflite-harness-users-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
