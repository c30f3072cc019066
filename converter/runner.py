"""One case -> one Result, the way both the CLI and the pytest plugin convert a model."""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Callable, Iterator

from . import cache, engines, firmware
from .discovery import Case
from .environment import tool_versions
from .failures import FailureKind, Stage, disk_full_message, is_disk_full
from .lifeline import Terminated, guardians_of_this_process, terminating
from .protocol import RESULT_FILE, WAITING_FILE, write_bytes_atomic, write_json_atomic
from .results import Result
from .settings import Settings
from .slots import NoSlot, SlotsUnusable, conversion_slot


def convert_case(case: Case, settings: Settings, *, on_start: Callable[[int], None] | None = None,
                 on_progress: Callable[[dict, float], None] | None = None) -> Result:
    artifacts = settings.artifacts_for(case.model_id)
    deliverable = settings.deliverable_for(case.model_id)
    if case.spec is None:
        shutil.rmtree(artifacts, ignore_errors=True)  # nothing from an earlier run may pass for this one
        result = Result.failed(case.model_id, str(case.path), case.error_kind, Stage.SPEC, case.spec_error,
                               versions=tool_versions())
    else:
        try:
            result = _converted(case, settings, artifacts, on_start, on_progress)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            result = _disk_full(case, exc, "the run's own files")
    return _delivered(result, case, settings, artifacts, deliverable)


def _converted(case: Case, settings: Settings, artifacts: Path, on_start, on_progress) -> Result:
    """From the cache when an entry holds up under today's spec, else converted in a child."""
    digest = cache.file_digest(case.path) if settings.cache_dir else None
    entry = _key(case.spec, digest, settings) if digest else None
    result = cache.restore(settings.cache_dir, entry, artifacts, case.spec, model_digest=digest,
                           threads=settings.threads) if entry else None
    if result is not None:
        return result
    try:
        with _machine_slot(settings, case, artifacts, on_progress):
            result, made_in = engines.convert(case.spec, artifacts, litert_python=settings.litert_python,
                                              threads=settings.threads, memory_limit_mb=settings.memory_limit_mb,
                                              on_start=on_start, on_progress=on_progress, preload=settings.preload,
                                              diagnosis_share=settings.diagnosis_share,
                                              fail_on_vacuous=settings.fail_on_vacuous)
    except NoSlot as exc:  # not cached: a wait, or an unusable slot folder, is not the model's own
        kind = FailureKind.NO_SLOT if isinstance(exc, SlotsUnusable) else FailureKind.TIMEOUT
        return Result.failed(case.model_id, str(case.path), kind, Stage.LOAD, str(exc), versions=tool_versions())
    converted = result.model_sha256 or (result.load.model_sha256 if result.load else None)
    if entry and converted:
        if converted != digest:  # the file was replaced while its run waited: the bytes converted decide
            print(f"--- {case.model_id}: the model file changed before it was loaded; cached under the bytes "
                  "that were converted")
            entry = _key(case.spec, converted, settings)
        cache.store(settings.cache_dir, entry, result, made_in)
    return result


def _key(spec, digest: str, settings: Settings) -> str:
    """The cache key; a model litert may convert keys on that environment's tool versions too."""
    tools = engines.litert_versions(settings.litert_python) if spec.engine != "onnx2tf" else None
    return cache.key(spec, digest, fail_on_vacuous=settings.fail_on_vacuous, engine_tools=tools)


def _delivered(result: Result, case: Case, settings: Settings, artifacts: Path, deliverable: Path) -> Result:
    """The deliverable copied (only by a run that goes on: none after SIGTERM), with its C array for
    TFLite Micro when it is one, or an earlier one removed (it no longer matches a model that fails
    so), and the record written."""
    try:
        if result.passed:
            if terminating():
                raise Terminated("terminated before delivering")
            delivered = result.deliverable_of(result.delivered)
            data = Path(delivered.path).read_bytes()
            write_bytes_atomic(deliverable, data)
            firmware.deliver(deliverable, case.model_id, data, delivered)  # Micro's C array, or none stale
            if not settings.keep_intermediates:
                _drop_intermediates(artifacts)
            result = dataclasses.replace(result, deliverable=str(deliverable))
        elif result.failure.kind.removes_deliverable:
            # a deliverable from an earlier run no longer matches this model: shipping it would
            # pass off an unverified file as verified (its artifacts stay, for diagnosis)
            deliverable.unlink(missing_ok=True)
            firmware.remove_c_array(deliverable)
        if artifacts.is_dir():
            result = dataclasses.replace(result, artifacts_bytes=_footprint(artifacts))
            result.write(artifacts / RESULT_FILE)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        during = f"delivering {deliverable.name} to {deliverable.parent}" if result.passed else "writing its record"
        return _disk_full(case, exc, during, result)
    return result


def _disk_full(case: Case, exc: OSError, during: str, result: Result | None = None) -> Result:
    """The machine's disk, not the model: one line, nothing cached, an earlier deliverable kept."""
    fields = {k: getattr(result, k) for k in ("load", "export", "savedmodel", "stage_seconds", "seconds",
                                               "peak_rss_mb")} if result is not None else {}
    return Result.failed(case.model_id, str(case.path), FailureKind.DISK_FULL, Stage.TEST,
                         disk_full_message(exc, during), versions=tool_versions(), **fields)


# a verified model needs none of these again (its TFLite files, log and result stay): they are
# most of the disk a batch takes (550 MB for nine real models), kept for failures only
INTERMEDIATES = ("model.onnx", "model_prepared.onnx", "onnx2tf_input.onnx", "saved_model", "onnx2tf_out")


@contextlib.contextmanager
def _machine_slot(settings: Settings, case: Case, artifacts: Path, on_progress) -> Iterator[None]:
    """One of the machine's conversion slots, waited for at most the model's timeout (the outer
    pytest-timeout allows for both); while it waits, a marker the batch's status line counts
    (removed however the wait ends) and the CLI's ticker told."""
    waiting = artifacts / WAITING_FILE
    noted: list[bool] = []

    def note_waiting(seconds: float) -> None:
        if not noted:
            artifacts.mkdir(parents=True, exist_ok=True)
            write_json_atomic(waiting, {"model_id": case.model_id, "guardians": guardians_of_this_process()})
            noted.append(True)
        if on_progress is not None:
            on_progress({"waiting": True}, seconds)

    try:
        with conversion_slot(settings.max_conversions, on_wait=note_waiting, limit=case.spec.timeout):
            waiting.unlink(missing_ok=True)
            yield
    finally:
        waiting.unlink(missing_ok=True)  # also when interrupted while waiting


def _drop_intermediates(artifacts: Path) -> None:
    for name in INTERMEDIATES:
        path = artifacts / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _footprint(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
