"""Real full and read-only file systems for fault tests: a tmpfs mounted in a private mount
namespace (`unshare -m`), seen only by the commands run inside it and gone when they end."""
from __future__ import annotations

import functools
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FILL = "dd if=/dev/zero of={0}/.filler bs=4k 2>/dev/null || true"  # until the disk says it is full


@functools.lru_cache(maxsize=1)
def _unshare() -> tuple[str, ...] | None:
    """`unshare -m` as root, `unshare -rm` (a user namespace) otherwise; None where neither mounts."""
    if shutil.which("unshare") is None:
        return None
    with tempfile.TemporaryDirectory() as probe:
        for command in (("unshare", "-m"), ("unshare", "-rm")):
            done = subprocess.run([*command, "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(probe)}"],
                                  capture_output=True)
            if done.returncode == 0:
                return command
    return None


needs_mounts = pytest.mark.skipif(_unshare() is None, reason="needs `unshare -m` to mount a tmpfs (root or user "
                                                             "namespaces)")


def run_mounted(mounts: dict[Path, str], script: str, cwd: Path, env: dict | None = None,
                timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the shell `script` with each folder of `mounts` a fresh tmpfs with those options
    (`size=4m`, `ro`)."""
    lines = ["set -e"]
    for folder, options in mounts.items():
        lines.append(f"mkdir -p {shlex.quote(str(folder))}")
        lines.append(f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))}")
    lines.append("set +e")
    lines.append(script)
    return subprocess.run([*_unshare(), "sh", "-c", "\n".join(lines)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
