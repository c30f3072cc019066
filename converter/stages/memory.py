"""The child's own memory: what it has used at most, what it holds now, and handing freed pages back."""
from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib


def release_memory() -> None:
    """Free what the last step dropped, and hand glibc's free pages back to the system: the next
    step's peak then starts from what is really still in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def freeze_imports(*modules: str) -> None:
    """Import `modules`, then freeze every object alive, out of the cyclic collector's reach.

    Called where a process has imported its libraries and holds no model yet (the preloaded
    process; an interpreter taking over, which holds only the checkpoint's records and arrays): the
    imports leave hundreds of thousands of objects the collector tracks (440,000 after torch,
    TensorFlow and onnx2tf), and every release_memory between steps walked them all again (0.3 s
    each, half of a small model's conversion), writing to their headers and so unsharing a forked
    child's pages from its parent's. Frozen objects are still freed by their reference counts; only
    cycles among them would outlive their use, and a model's objects are not among them."""
    for module in modules:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()


def peak_rss_mb() -> float:
    """The most this process (or a child it waited for) held resident."""
    try:
        import resource
    except ImportError:  # Windows: the parent's watch of the process tree still records the peak
        return rss_now_mb()
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0


def rss_now_mb() -> float:
    """What this process holds resident now."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20
