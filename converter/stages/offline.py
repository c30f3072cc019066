"""A guard that refuses (and records) every attempt to reach the network from this process.

The harness must work offline; onnx2tf in particular downloads calibration images. An audit
hook sees every socket connect and name lookup, even ones wrapped in a try/except.
"""
from __future__ import annotations

import socket
import sys

attempts: list[str] = []
_LOCAL = ("localhost", "127.0.0.1", "::1", None, "")


def _hook(event: str, args) -> None:
    if event == "socket.connect":
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) == socket.AF_UNIX:
            return
        host = address[0] if isinstance(address, tuple) else address
        if str(host).startswith("127.") or host in _LOCAL:
            return
        attempts.append(f"connect {address!r}")
        raise ConnectionRefusedError(f"network access blocked by the conversion harness: {address!r}")
    if event == "socket.getaddrinfo":
        host = args[0]
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if host in _LOCAL or str(host).startswith("127."):
            return
        attempts.append(f"lookup {host!r}")
        raise socket.gaierror(f"network access blocked by the conversion harness: {host!r}")


def install() -> None:
    sys.addaudithook(_hook)  # audit hooks cannot be removed: this holds for the whole process
