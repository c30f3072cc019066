"""The merge's reading of shards, on crafted shard folders (merge.py,
summary_file.py); the real shards are tests/e2e/test_merge.py's."""
from __future__ import annotations

import json

from converter.merge import read_shard
from converter.report import build_summary

from .. import builders
from ..support import write


def shard(folder, rows: dict, kept=(), cases: str = "", failures: int = 0):
    summary = build_summary(rows, {}, {"models_dirs": []})
    summary["run"] = {"started": "2026-01-02T03:04:05Z", "partial": True}
    if kept:
        summary["kept_from_earlier_runs"] = {m: "2026-01-01T00:00:00Z" for m in kept}
    write(folder / "summary.json", json.dumps(summary))
    tests = cases.count("<testcase")
    write(folder / "junit.xml", f'<testsuites><testsuite name="pytest" tests="{tests}" failures="{failures}" errors="0" '
                                f'skipped="0" time="1.0">{cases}</testsuite></testsuites>')
    return folder


def test_a_shard_is_its_own_rows_not_those_its_folder_kept_from_earlier_runs(tmp_path):
    rows = {m: builders.record(model_id=m) for m in ("a", "b")}
    folder = shard(tmp_path / "s1", rows, kept=("b",))
    assert set(read_shard(folder)) == {"a"}

