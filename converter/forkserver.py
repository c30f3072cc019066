"""The parent's side of the preloaded process (converter/stages/forkserver.py).

Each conversion child used to start from nothing and spend 2-3 s importing torch, TensorFlow
and onnx2tf. A parent (an xdist worker, the CLI) now starts one preloaded process per thread
count, which forks a child per model: the child is still a separate process in its own
session, watched, timed and killed exactly like a spawned one, and its memory is released
when it exits. Whatever goes wrong with the preloaded process (it cannot start, it dies, it
stops answering), the parent discards it and spawns children as before.

An engine with its own environment (litert) has its own preloaded process, started from that
environment's interpreter: its imports (torch, litert-torch, JAX, ai-edge-quantizer) take 5-8 s a
model otherwise.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .environment import PROJECT_ROOT, child_environment, interpreter_command

READY_SECONDS = 300.0  # imports take 3-10 s; a loaded machine may be much slower
ANSWER_SECONDS = 30.0


class Unavailable(Exception):
    """The preloaded process cannot take a job: spawn the child instead."""


class Forkserver:
    def __init__(self, threads: int, python: str | None = None):
        """`python`: another environment's interpreter (an engine's own), else this one."""
        self.threads = threads
        self._buffer = b""
        parent = str(os.getpid())
        command = ([sys.executable, "-m", "converter.stages.forkserver", parent] if python is None
                   else interpreter_command(python, "converter.stages.forkserver", "spawned_main", parent, "litert"))
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=str(PROJECT_ROOT),
            env=child_environment(threads), start_new_session=True)
        try:
            ready = self._answer(READY_SECONDS) == "ready"
        except BaseException:  # Ctrl-C while it imports: it must not outlive the wait
            self.close()
            raise
        if not ready:
            self.close()
            raise Unavailable("the preloaded process did not start")

    def alive(self) -> bool:
        return self.process.poll() is None

    def launch(self, job_path: Path, log_path: Path) -> "ForkedChild":
        try:
            line = {"job": str(job_path), "log": str(log_path), "env": child_environment(self.threads)}
            self.process.stdin.write(json.dumps(line).encode() + b"\n")
            self.process.stdin.flush()
            answer = self._answer(ANSWER_SECONDS)
        except OSError as exc:
            raise Unavailable(str(exc)) from exc
        except BaseException:  # Ctrl-C, pytest-timeout: an answer left unread would be taken as the next one's
            self.close()
            raise
        if not answer.startswith("started "):
            raise Unavailable(f"unexpected answer {answer!r}")
        return ForkedChild(self, int(answer.split()[1]))

    def _answer(self, seconds: float, block: bool = True) -> str | None:
        """The next line from the preloaded process; '' if it died or stayed silent, None
        if `block` is false and no whole line has arrived yet."""
        deadline = time.monotonic() + seconds
        fd = self.process.stdout.fileno()
        poller = select.poll()  # not select(): a busy process may hold descriptors above 1024
        poller.register(fd, select.POLLIN)
        while b"\n" not in self._buffer:
            wait = max(0.0, deadline - time.monotonic()) if block else 0.0
            if not poller.poll(wait * 1000):
                return None if not block else ""
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                stream.close()


class ForkedChild:
    """A forked conversion child, with the part of subprocess.Popen's interface the watch uses."""

    def __init__(self, server: Forkserver, pid: int):
        self.server, self.pid, self.returncode = server, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._take(self.server._answer(0, block=False))
        return self.returncode

    def kill_group(self) -> None:
        """Kill the child's whole group (it leads its own session) and wait for its status."""
        for kill in (os.killpg, os.kill):  # before its setsid the child has no group of its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(self.pid, signal.SIGKILL)  # also once it ended: what it started may live on
        if self.returncode is not None:
            return
        try:
            self._take(self.server._answer(ANSWER_SECONDS))
        except BaseException:  # interrupted while waiting for the status: the protocol is out of step
            self.server.close()
            raise
        if self.returncode is None:  # the preloaded process no longer answers: never use it again
            self.server.close()
            self.returncode = -signal.SIGKILL

    def _take(self, answer: str | None) -> None:
        if answer is None:
            return
        if answer.startswith("ended "):
            self.returncode = int(answer.split()[1])
        else:  # the preloaded process died under its child: the child died with it
            self.server.close()
            self.returncode = -signal.SIGKILL


_servers: dict[tuple[str | None, int], Forkserver] = {}
_broken: set[tuple[str | None, int]] = set()


def launch(job_path: Path, log_path: Path, threads: int, python: str | None = None) -> ForkedChild:
    """Fork a conversion child from this process's preloaded process for `threads` (started on
    first use), of the environment of `python` (None: this one). Raises Unavailable if there is
    none to be had."""
    key = (python, threads)
    if not sys.platform.startswith("linux") or key in _broken:
        raise Unavailable("no preloaded process on this platform")  # fork after TensorFlow is Linux-only
    server = _servers.get(key)
    if server is None or not server.alive():
        if server is not None:
            server.close()  # its pipes, and its zombie
        try:
            server = _servers[key] = Forkserver(threads, python)
        except (OSError, Unavailable):
            _broken.add(key)  # once is enough: do not pay the imports again for every model
            raise Unavailable("the preloaded process did not start") from None
    try:
        return server.launch(job_path, log_path)
    except Unavailable:
        server.close()
        del _servers[key]
        raise


@atexit.register
def close_all() -> None:
    while _servers:
        _servers.popitem()[1].close()
