"""Facts about the running environment that reports and baselines record (import-light)."""
from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

TOOLS = ("torch", "tensorflow", "onnx2tf", "onnx", "onnxruntime", "ai-edge-litert")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
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


def interpreter_command(python: str, module: str, function: str, *args: str) -> list[str]:
    """`module.function()` in another environment's interpreter: isolated (-I: none of this environment's
    variables, no user site, no script folder first on sys.path), unbuffered, with the harness's package
    found after that environment's own packages (its torch and numpy, never this one's); PYTHONPATH is
    appended likewise, for factories that import from it. `args` are its sys.argv[1:]."""
    bootstrap = ("import os, sys; sys.path += [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]"
                 f" + [{str(PROJECT_ROOT)!r}]; from {module} import {function}; {function}()")
    return [python, "-I", "-u", "-c", bootstrap, *args]
