"""One case -> one Result, the way both the CLI and the pytest plugin convert a model."""
from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Callable, Iterator

from . import cache
from .discovery import Case
from .environment import tool_versions
from .failures import FailureKind, Stage
from .isolation import run_isolated
from .lifeline import guardians_of_this_process
from .protocol import RESULT_FILE, WAITING_FILE, write_bytes_atomic, write_json_atomic
from .results import Result
from .settings import Settings
from .slots import NoSlot, conversion_slot


def convert_case(case: Case, settings: Settings, *, on_start: Callable[[int], None] | None = None,
                 on_progress: Callable[[dict, float], None] | None = None) -> Result:
    artifacts = settings.artifacts_for(case.model_id)
    deliverable = settings.deliverable_for(case.model_id)
    if case.spec is None:
        shutil.rmtree(artifacts, ignore_errors=True)  # nothing from an earlier run may pass for this one
        result = Result.failed(case.model_id, str(case.path), FailureKind.SPEC_ERROR, Stage.SPEC,
                               case.spec_error, versions=tool_versions())
        result.write(artifacts / RESULT_FILE)
    else:
        entry = cache.key(case.spec, settings.threads, settings.memory_limit_mb) if settings.cache_dir else None
        result = cache.restore(settings.cache_dir, entry, artifacts, case.model_id, str(case.path)) if entry else None
        if result is None:
            try:
                with _machine_slot(settings, case, artifacts, on_progress):
                    result = run_isolated(case.spec, artifacts, threads=settings.threads,
                                          memory_limit_mb=settings.memory_limit_mb, on_start=on_start,
                                          on_progress=on_progress, preload=settings.preload,
                                          diagnosis_share=settings.diagnosis_share,
                                          fail_on_vacuous=settings.fail_on_vacuous)
            except NoSlot as exc:  # not cached: a timeout is not the model's own
                result = Result.failed(case.model_id, str(case.path), FailureKind.TIMEOUT, Stage.LOAD, str(exc),
                                       versions=tool_versions())
                result.write(artifacts / RESULT_FILE)
            if entry:
                cache.store(settings.cache_dir, entry, result, artifacts)
    if result.passed:
        write_bytes_atomic(deliverable, Path(result.deliverable_of(result.delivered).path).read_bytes())
        if not settings.keep_intermediates:
            _drop_intermediates(artifacts)
        result = dataclasses.replace(result, deliverable=str(deliverable), artifacts_bytes=_footprint(artifacts))
        result.write(artifacts / RESULT_FILE)
    else:
        # a deliverable from an earlier run no longer matches this model: shipping it would
        # pass off an unverified file as verified (its artifacts stay, for diagnosis)
        deliverable.unlink(missing_ok=True)
        if artifacts.is_dir():
            result = dataclasses.replace(result, artifacts_bytes=_footprint(artifacts))
            result.write(artifacts / RESULT_FILE)
    return result


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
