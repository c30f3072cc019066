"""The merge's reading of shards and its JUnit report, on crafted shard folders (merge.py,
summary_file.py); the real shards are tests/e2e/test_merge.py's."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from converter.baseline import GateFailure, GateOutcome
from converter.merge import add_gate_cases, merge_junit, read_shard
from converter.report import build_summary

from .. import builders
from ..support import write

GATE_CASE = ('<testcase classname="models.a.pt" name="a"><properties><property name="baseline_gate" value="regression"/>'
             '</properties><failure message="REGRESSION a: grew">REGRESSION a: grew</failure></testcase>')


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


def test_the_merged_junit_holds_the_merged_gates_failures_not_a_shards(tmp_path):
    """A shard's gate judged its own models; the merged gate judges the batch and writes its own
    failures as test cases, as a run does: under the model's test case, or the baseline's name."""
    folder = shard(tmp_path / "s1", {"a": builders.record(model_id="a")},
                   cases='<testcase classname="models.a.pt" name="a" time="1.0"/>' + GATE_CASE, failures=1)
    suites = merge_junit([folder], [read_shard(folder)])
    suite = suites.find("testsuite")
    assert [c.get("name") for c in suite.iter("testcase")] == ["a"] and suite.get("failures") == "0"
    gate = GateOutcome((), failed=True, failures=(GateFailure("a", "regression", "REGRESSION a: size"),
                                                  GateFailure("gone", "gone", "REGRESSION gone: disappeared")))
    root = ET.fromstring(add_gate_cases(suites, gate, read_shard(folder), "model_cases/baseline.json"))
    failed = {(c.get("classname"), c.get("name")): c.find("failure").get("message")
              for c in root.iter("testcase") if c.find("failure") is not None}
    assert failed == {("models.a.pt", "a"): "REGRESSION a: size",
                      ("model_cases.baseline.json", "gone"): "REGRESSION gone: disappeared"}
    assert root.find("testsuite").get("tests") == "3" and root.find("testsuite").get("failures") == "2"
