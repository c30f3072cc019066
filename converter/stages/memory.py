"""The child's own memory: what it has used at most, what it holds now, and handing freed pages back."""
from __future__ import annotations

import contextlib
import ctypes
import gc


def release_memory() -> None:
    """Free what the last step dropped, and hand glibc's free pages back to the system: the next
    step's peak then starts from what is really still in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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
