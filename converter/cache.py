"""A content-addressed cache of verified conversions: an unchanged model is not converted again.

The key covers everything the result depends on: the model file's bytes, the code beside it that
a factory or a trusted pickle imports, the resolved spec, the harness's own source, the tool
versions, the thread count and the memory ceiling. An entry holds the result and its TFLite files, with a
manifest of their SHA-256 sums: an entry whose files do not match it (corrupt, tampered with) is
deleted and the model converted again, never trusted. Failures that depend on the machine
(timeout, out of memory, crash) are not cached.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from .environment import tool_versions
from .failures import FailureKind
from .protocol import RESULT_FILE, write_bytes_atomic
from .results import Result

HARNESS_ROOT = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
NOT_CACHED = (FailureKind.TIMEOUT, FailureKind.OUT_OF_MEMORY, FailureKind.CRASH)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1)  # the source does not change during a run: read it once, not per model
def _harness_version() -> str:
    return _sha256(b"".join(p.read_bytes() for p in sorted(HARNESS_ROOT.rglob("*.py"))))


def key(spec, threads: int, memory_limit_mb: float) -> str:
    model = Path(spec.path)
    code = {}
    if spec.factory or spec.trust_pickle:  # the model is also the code it imports from its folder
        code = {p.name: _sha256(p.read_bytes()) for p in sorted(model.parent.glob("*.py"))}
    described = {k: v for k, v in spec.to_dict().items() if k not in ("model_id", "path", "sources")}
    material = {"model": _sha256(model.read_bytes()), "code": code, "spec": described,
                "harness": _harness_version(), "tools": tool_versions(), "threads": threads,
                "memory_limit_mb": spec.memory_limit_mb or memory_limit_mb}  # a pass under more memory proves nothing
    return _sha256(json.dumps(material, sort_keys=True, default=str).encode())


def restore(cache_dir: Path, entry_key: str, artifacts: Path, model_id: str, model_path: str) -> Result | None:
    """The cached result, its TFLite files copied into `artifacts`; None on a miss or a bad entry."""
    entry = Path(cache_dir) / entry_key
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        contents = {name: (entry / name).read_bytes() for name in manifest}
    except (OSError, ValueError):
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        return None
    if any(_sha256(data) != manifest[name] for name, data in contents.items()):
        shutil.rmtree(entry, ignore_errors=True)  # corrupt or tampered with: rebuilt, never trusted
        return None
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    for name, data in contents.items():
        if name.endswith(".tflite"):
            write_bytes_atomic(artifacts / name, data)
    result = Result.from_dict(json.loads(contents[RESULT_FILE]))
    result = dataclasses.replace(
        result, model_id=model_id, model_path=model_path, cache_hit=True, deliverable=None,
        deliverables=tuple(dataclasses.replace(d, path=str(artifacts / Path(d.path).name)) for d in result.deliverables))
    result.write(artifacts / RESULT_FILE)
    return result


def store(cache_dir: Path, entry_key: str, result: Result, artifacts: Path) -> None:
    if result.failure and result.failure.kind in NOT_CACHED:
        return
    contents = {RESULT_FILE: json.dumps(dataclasses.replace(result, deliverable=None).to_dict()).encode()}
    for d in result.deliverables:
        if Path(d.path).is_file():
            contents[Path(d.path).name] = Path(d.path).read_bytes()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".staging-"))
    try:
        for name, data in contents.items():
            (staging / name).write_bytes(data)
        (staging / MANIFEST).write_text(json.dumps({n: _sha256(d) for n, d in contents.items()}, sort_keys=True))
        shutil.rmtree(cache_dir / entry_key, ignore_errors=True)
        os.replace(staging, cache_dir / entry_key)  # whole entries only: a reader never sees half of one
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
