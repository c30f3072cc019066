"""A batch's summary.json read back: the merge reads each shard's rows, and a partial run (`-k`,
`--lf`, a split) the rows of the models it did not select, which it keeps.

A summary names the run that wrote it (`run.started`) and the rows it kept from earlier runs
(`kept_from_earlier_runs`: model -> the start of the run each comes from): the run's own rows are
the others. Every row is checked before it is used, as a shard's is: a tampered or truncated file
is one line, never a traceback, and a FIFO or a 2 GB file is refused without reading it whole.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .results import SCHEMA_VERSION, Outcome, Result

MAX_SUMMARY_FILE = 256 * 2**20  # a summary of 20 000 models is a few tens of MB


class SummaryUnreadable(Exception):
    """The file is no summary this release can use; the message says why, without the path."""


@dataclass(frozen=True)
class StoredSummary:
    rows: dict[str, Result]  # every row, each with its outcome
    started: str | None = None  # when the run that wrote it started (None: a summary of an older release)
    kept: dict[str, str | None] = field(default_factory=dict)  # rows kept from earlier runs -> their run
    labels: dict[str, str] = field(default_factory=dict)  # its "vs baseline" column
    marks: dict[str, str] = field(default_factory=dict)
    models_dirs: list[str] | None = None

    def own(self) -> dict[str, Result]:
        """The rows the run that wrote it converted (a shard's, for the merge)."""
        return {m: r for m, r in self.rows.items() if m not in self.kept}

    def run_of(self, model_id: str) -> str | None:
        return self.kept[model_id] if model_id in self.kept else self.started


def read_regular(path: Path, limit: int = MAX_SUMMARY_FILE) -> bytes:
    """A file, if it is a regular file of at most `limit` bytes: a FIFO would block the reader for
    ever, a link to /dev/zero never end, a 2 GB file fill the memory. Opened without blocking,
    checked on the open file (what is checked is what is read), read no further than the limit."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise OSError(f"{path.name} is {info.st_size / 2**20:,.0f} MB, more than a shard's {limit / 2**20:,.0f} MB")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path.name} is more than a shard's {limit / 2**20:,.0f} MB")
    return data


def read_summary(path: Path) -> StoredSummary:
    """The summary at `path`, every row checked; SummaryUnreadable saying what is wrong."""
    try:
        summary = json.loads(read_regular(Path(path)).decode("utf-8"), object_pairs_hook=_unique_keys)
        if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict):
            raise ValueError("it holds no 'models' object")
        if summary.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"its schema {summary.get('schema_version')!r} is not {SCHEMA_VERSION} (written by "
                             "another release of the harness: rerun that shard)")
        rows = {model_id: _record(model_id, data) for model_id, data in summary["models"].items()}
        return StoredSummary(rows, *_provenance(summary, rows))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SummaryUnreadable(str(exc)) from None


def _provenance(summary: dict, rows: dict) -> tuple:
    """Which run wrote it, which rows it kept from which earlier run, and its "vs baseline" column."""
    run, kept = summary.get("run", {}), summary.get("kept_from_earlier_runs", {})
    if not isinstance(run, dict) or not isinstance(run.get("started", ""), (str, type(None))):
        raise ValueError("'run' is not an object with the time it started")
    if not isinstance(kept, dict) or not set(kept) <= set(rows) \
            or not all(isinstance(v, (str, type(None))) for v in kept.values()):
        raise ValueError("'kept_from_earlier_runs' is not an object of its models -> the run each comes from")
    verdict = summary.get("baseline") if isinstance(summary.get("baseline"), dict) else {}
    labels, marks = verdict.get("labels", {}), verdict.get("marks", {})
    if not all(isinstance(x, dict) and all(isinstance(v, str) for v in x.values()) for x in (labels, marks)):
        raise ValueError("its baseline labels are not texts")
    dirs = (summary.get("settings") or {}).get("models_dirs") if isinstance(summary.get("settings"), dict) else None
    return run.get("started"), dict(kept), dict(labels), dict(marks), dirs if isinstance(dirs, list) else None


def _unique_keys(pairs):
    """A key written twice would silently keep its last copy: one of two records of a model hidden."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the key {repeated!r} appears twice")
    return found


def _record(model_id: str, data) -> Result:
    if not isinstance(data, dict):
        raise ValueError(f"model {model_id!r} is a {type(data).__name__}, not a record")
    try:
        record = Result.from_dict(data)
        outcome = Outcome(data.get("outcome"))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"model {model_id!r} is not a record ({type(exc).__name__}: {exc})") from None
    if record.model_id != model_id or record.status not in ("passed", "failed", "gone"):
        raise ValueError(f"model {model_id!r} has a record of {record.model_id!r} with status {record.status!r}")
    if (record.status == "passed" and record.failure is not None) or (record.status == "failed" and not record.failure) \
            or (outcome is Outcome.PASSED and record.status != "passed"):
        raise ValueError(f"model {model_id!r} is {outcome.value} with status {record.status!r} and "
                         f"{'a failure' if record.failure else 'no failure'}: a record contradicts itself")
    bad = [n for n in _numbers(data) if not math.isfinite(n)]
    if bad and record.status == "passed":  # a passed model has finite figures; NaN would disable the gate
        raise ValueError(f"model {model_id!r} passed with a figure that is not finite")
    return dataclasses.replace(record, outcome=outcome)


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield float(value)
    elif isinstance(value, str) and value in ("nan", "inf", "-inf"):
        yield float(value)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
