"""Hangs, orphans and denial of service, produced for real: another user's link where the slot
folder goes, FIFOs and huge files as calibration samples, a factory's setsid process, signals."""
from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

from . import users

ROOT = Path(__file__).resolve().parent.parent

SLOT = """
from converter.slots import conversion_slot, default_folder
folder, note = default_folder()
print(folder)
print(note)
start = time.monotonic()
with conversion_slot(2, limit=5):
    print(round(time.monotonic() - start, 1))
"""


def test_a_link_another_user_puts_where_the_slot_folder_goes_stalls_nothing():
    uid = users.other_uid()
    with users.reachable_folder() as scratch:
        temp = scratch / "tmp"
        temp.mkdir()
        temp.chmod(0o1777)  # like /tmp: anyone may create an entry, no one rename another's
        link = temp / f"tflite-harness-slots-{getpass.getuser()}"
        made = users.as_other(uid, "ln", "-s", "/proc/self", str(link))
        assert made.returncode == 0 and os.lstat(link).st_uid == uid, made.stderr
        env = dict(os.environ, TMPDIR=str(temp), HOME=str(scratch / "home"), XDG_CACHE_HOME="", PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-c", SLOT], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr  # no NoSlot after waiting its whole limit
        folder, note, waited = done.stdout.splitlines()
        assert folder == str(scratch / "home" / ".cache" / "tflite-harness" / "slots")
        assert f"{link} is a symbolic link (uid {uid}), not a folder" in note
        assert float(waited) < 1.0
