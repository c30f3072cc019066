"""The preloaded process: imports torch, TensorFlow and onnx2tf once, then forks one child per model.

    python -m converter.stages.forkserver PARENT_PID [litert]

With `litert`, in the litert engine's own environment, it imports that engine's libraries instead
(torch, litert-torch and with it JAX, ai-edge-quantizer, the LiteRT runtime).

Reads one job per line on stdin (JSON: the job file, the log, the child's environment) and answers on stdout: `ready` once the
imports are done, then `started PID` and `ended RETURNCODE` for each job. A forked child
converts exactly as `python -m converter.stages.pipeline JOB.json` does: in its own session,
its output in its log, ended by os._exit. So each model's memory is still released when its
child exits and a crash still takes down that child alone; what a model no longer pays is the
2-3 s of imports. The parent (converter/forkserver.py) falls back to spawning children
whenever this process cannot be used.

This process starts no thread and runs no torch or TensorFlow op: a fork copies only the
calling thread, so a pool of threads or a lock held by one would be broken in every child. It
refuses to serve if an import started a Python thread (the parent then spawns); the one native
pool the imports start, OpenBLAS's (with more than one thread), shuts down and restarts around
fork() by itself.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import traceback
import warnings

from .. import lifeline
from .memory import freeze_imports


def preload(engine: str) -> None:
    global _BEFORE_ONNX2TF
    if engine == "litert":
        import ai_edge_litert.interpreter  # noqa: F401
        import ai_edge_quantizer  # noqa: F401
        import litert_torch  # noqa: F401
        import torch  # noqa: F401

        from . import litert_steps, load, pipeline, verify  # noqa: F401
        _BEFORE_ONNX2TF = (sys.getrecursionlimit(), list(warnings.filters))  # nothing to undo: kept as they are
        return
    import numpy  # noqa: F401
    import onnx  # noqa: F401
    import onnxruntime  # noqa: F401
    import tensorflow  # noqa: F401
    import tf_keras  # noqa: F401
    import torch  # noqa: F401

    from . import deploy, diagnose, export, load, pipeline, tflite, verify  # noqa: F401
    from .savedmodel import prepare_onnx2tf

    _BEFORE_ONNX2TF = (sys.getrecursionlimit(), list(warnings.filters))
    prepare_onnx2tf()  # which raises the recursion limit, silences warnings, seeds (undone per child)


_BEFORE_ONNX2TF: tuple = (1000, [])


def _child(job_path: str, log_path: str, env: dict, replies: int, parent: int) -> None:
    """In the forked child: become what `python -m converter.stages.pipeline` would be."""
    status = 70
    try:
        os.environ.clear()  # the parent's environment of now, as a spawned child would get it
        os.environ.update(env)
        limit, filters = _BEFORE_ONNX2TF  # load and export run as in a spawned child (savedmodel redoes it)
        sys.setrecursionlimit(limit)
        warnings.filters[:] = filters
        os.setsid()  # its own process group, which the parent kills as a whole
        os.close(replies)
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        from .pipeline import main

        status = main(job_path, parent=parent)  # taken before the fork: it may be gone already
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def serve(parent: int, engine: str = "onnx2tf") -> None:
    lifeline.die_with_parent_on_linux(parent)  # no watchdog thread here: see the module's docstring
    replies = os.dup(1)  # the protocol's own descriptor: a library printing to stdout cannot garble it
    os.dup2(2, 1)
    preload(engine)
    freeze_imports()  # in every child too: its collections no longer walk what the imports left

    def reply(text: str) -> None:
        os.write(replies, (text + "\n").encode())

    if threading.active_count() > 1:  # an import started a Python thread: forking is no longer safe
        reply(f"unsafe: {threading.active_count()} Python threads after the imports")
        return
    reply("ready")
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(job["job"], job["log"], job["env"], replies, me)
        reply(f"started {pid}")
        _, status = os.waitpid(pid, 0)
        reply(f"ended {os.waitstatus_to_exitcode(status)}")


def spawned_main() -> None:
    """`python -m converter.stages.forkserver PARENT_PID [ENGINE]`, or an engine's own interpreter's
    bootstrap (environment.interpreter_command)."""
    serve(int(sys.argv[1]), *sys.argv[2:3])


if __name__ == "__main__":
    spawned_main()
