"""Facts about the running environment that reports and baselines record (import-light)."""
from __future__ import annotations

import os
from importlib import metadata

TOOLS = ("torch", "tensorflow", "onnx2tf", "onnx", "onnxruntime", "ai-edge-litert")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def child_environment(threads: int) -> dict[str, str]:
    """Environment for a conversion child: its share of threads, quiet TensorFlow."""
    env = dict(os.environ)
    for var in THREAD_VARIABLES:
        env[var] = "1" if var == "TF_NUM_INTEROP_THREADS" else str(threads)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("CUDA_VISIBLE_DEVICES", "")
    # glibc gives each thread that allocates its own heap arena, and TensorFlow's pools have many:
    # freed pages then stay spread over arenas. One arena measured 6-7 % lower savedmodel and tflite
    # peaks on ConvNeXt-tiny, and no slower (benchmarks/README.md); a value the user set is kept
    env.setdefault("MALLOC_ARENA_MAX", "1")
    return env
