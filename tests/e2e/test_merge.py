"""A batch split over CI machines, merged: two shards run for real, then one verdict."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

from .. import builders
from ..support import ROOT, run


def merge(harness, *args):
    return subprocess.run([sys.executable, "-m", "converter.merge", *args], capture_output=True, text=True,
                          cwd=harness.path, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_two_shards_merge_into_one_summary_junit_and_verdict(harness):
    models = harness.path / "models"
    builders.torchscript_cnn(models, name="a_net")
    builders.torchscript_cnn(models, name="b_net", seed=1)
    (models / "c_noshape.pt").write_bytes(b"")  # fails at once (spec_error): a failing model in a shard
    full = run(harness, "--tflite-models-dir", "models", "--tflite-baseline-update")
    full.assert_outcomes(passed=2, failed=1)

    shard1 = run(harness, "--tflite-models-dir", "models", "-k", "a_net", "--tflite-reports-dir", "shard1",
                 "--junitxml=shard1/junit.xml")
    shard2 = run(harness, "--tflite-models-dir", "models", "-k", "c_noshape", "--tflite-reports-dir", "shard2",
                 "--junitxml=shard2/junit.xml")
    shard1.assert_outcomes(passed=1)
    shard2.assert_outcomes(failed=1)
    assert "GONE" not in shard1.stdout.str()  # a shard judges only its own models

    merged = merge(harness, "shard1", "shard2", "--reports-dir", "merged")
    assert merged.returncode == 1, merged.stdout + merged.stderr
    # b_net ran in no shard: the split lost it, and the merged gate says so, as a single run would
    assert "REGRESSION b_net: was in the baseline and has disappeared" in merged.stdout
    summary = json.loads((harness.path / "merged" / "summary.json").read_text())
    assert {m: r["outcome"] for m, r in summary["models"].items()} == {
        "a_net": "passed", "b_net": "gone", "c_noshape": "failed"}
    assert summary["baseline"]["failed"] and summary["settings"]["shards"] == ["shard1", "shard2"]
    # every link on the merged page (and on a shard's) opens a file that is there: a_net's record is in
    # its shard's artifacts (restored from the cache there, it has no log); c_noshape never converted
    for page in (harness.path / "merged" / "summary.html", harness.path / "shard1" / "summary.html"):
        links = re.findall(r'href="([^"]+)"', page.read_text())
        assert links and all((page.parent / urllib.parse.unquote(link)).is_file() for link in links), (page, links)
    merged_links = re.findall(r'href="([^"]+)"', (harness.path / "merged" / "summary.html").read_text())
    assert "../shard1/artifacts/a_net/result.json" in merged_links and not any("c_noshape" in x for x in merged_links)
    cases = list(ET.parse(harness.path / "merged" / "junit.xml").getroot().iter("testcase"))
    assert sorted(c.get("name") for c in cases) == ["a_net", "b_net", "c_noshape"]  # the lost model, a failed case
    (lost,) = [c for c in cases if c.get("name") == "b_net"]
    assert lost.find("failure").get("message") == "REGRESSION b_net: was in the baseline and has disappeared"

    everything = run(harness, "--tflite-models-dir", "models", "-k", "b_net", "--tflite-reports-dir", "shard3",
                     "--junitxml=shard3/junit.xml")
    everything.assert_outcomes(passed=1)
    complete = merge(harness, "shard1", "shard2", "shard3", "--reports-dir", "merged")
    assert complete.returncode == 1 and "no regression against" in complete.stdout  # c_noshape still fails
    overlap = merge(harness, "shard1", "shard1", "--reports-dir", "merged")
    assert overlap.returncode == 2 and "is in two shards" in overlap.stderr

    tamper(harness, harness.path / "shard1")
    nan_baseline = harness.path / "nan_baseline.json"
    stored = (harness.path / "tflite_baseline.json").read_text()
    nan_baseline.write_text(stored.replace('"err": ', '"err": NaN, "was": ', 1))
    gated = merge(harness, "shard1", "shard2", "shard3", "--reports-dir", "merged", "--baseline", str(nan_baseline))
    # NaN compares false with everything: it would have let any error growth through
    assert gated.returncode == 1 and "holds NaN" in gated.stdout and "Traceback" not in gated.stdout + gated.stderr


def tamper(harness, shard: Path) -> None:
    """Shards a hand or a broken job edited: each is one line and a usage exit status, never a traceback."""
    import shutil

    text = (shard / "summary.json").read_text()
    summary = json.loads(text)
    record = summary["models"]["a_net"]
    no_outcome = {k: v for k, v in record.items() if k != "outcome"}
    nan_figure = json.loads(json.dumps(record))
    nan_figure["deliverables"][0]["outputs"][0]["range_rel_err"] = float("nan")
    variants = {
        "a row that is a string": ({**summary, "models": {"a_net": "passed"}}, "is a str, not a record"),
        "a row with no outcome": ({**summary, "models": {"a_net": no_outcome}}, "is not a record"),
        "a passed row with NaN": ({**summary, "models": {"a_net": nan_figure}}, "figure that is not finite"),
        "a repeated model": (text.replace('"models": {', '"models": {"a_net": {}, ', 1), "appears twice"),
        "a JUnit count that is no number": (summary, "a count is not a number"),
    }
    for name, (content, words) in variants.items():
        folder = harness.path / f"tampered_{len(os.listdir(harness.path))}"
        shutil.copytree(shard, folder)
        (folder / "summary.json").write_text(content if isinstance(content, str) else json.dumps(content))
        if "JUnit" in name:
            junit = folder / "junit.xml"
            junit.write_text(junit.read_text().replace('tests="1"', 'tests="abc"'))
        done = merge(harness, str(folder), "--reports-dir", "merged_tampered")
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, name


def test_a_merge_never_overwrites_a_shard_trusts_a_contradiction_or_blocks_on_a_shards_file(harness):
    import shutil

    models = harness.path / "models"
    builders.torchscript_cnn(models, name="a_net")
    (models / "c_noshape.pt").write_bytes(b"")
    run(harness, "--tflite-models-dir", "models", "-k", "a_net", "--tflite-reports-dir", "shard1",
        "--junitxml=shard1/junit.xml").assert_outcomes(passed=1)
    run(harness, "--tflite-models-dir", "models", "-k", "c_noshape", "--tflite-reports-dir", "shard2",
        "--junitxml=shard2/junit.xml").assert_outcomes(failed=1)
    shard1 = harness.path / "shard1"
    kept = {name: (shard1 / name).read_bytes() for name in ("summary.json", "junit.xml")}
    onto = merge(harness, "shard1", "shard2", "--reports-dir", "shard1")
    assert onto.returncode == 2 and "shard1 is the shard folder shard1: merging there would overwrite" in onto.stderr
    assert {name: (shard1 / name).read_bytes() for name in kept} == kept  # the shard is as it was

    def variant(name: str, edit) -> str:
        folder = harness.path / name
        shutil.copytree(shard1, folder)
        edit(folder)
        return name

    def summary_edit(change):
        def edit(folder):
            summary = json.loads((folder / "summary.json").read_text())
            change(summary)
            (folder / "summary.json").write_text(json.dumps(summary))
        return edit

    def fifo(folder):
        (folder / "junit.xml").unlink()
        os.mkfifo(folder / "junit.xml")

    def zero(folder):
        (folder / "summary.json").unlink()
        (folder / "summary.json").symlink_to("/dev/zero")

    def huge(folder):
        with open(folder / "summary.json", "r+b") as fh:
            fh.truncate(2 * 2**30)  # 2 GB, sparse

    def stray_case(folder):
        junit = (folder / "junit.xml").read_text()
        case = junit[junit.index("<testcase"):junit.index("</testcase>") + len("</testcase>")]
        (folder / "junit.xml").write_text(junit.replace(case, case + case.replace('name="a_net"', 'name="z_net"')))

    failure = {"kind": "numeric_mismatch", "stage": "verify", "message": "drq output 'output_0' is off"}
    attacks = {
        "passed with a failure": (variant("contradiction", summary_edit(
            lambda s: s["models"]["a_net"].update(failure=failure))), "a record contradicts itself"),
        "other tool versions": (variant("old_tools", summary_edit(
            lambda s: s["versions"].update(onnx2tf="1.0.0"))), "was made with onnx2tf 1.0.0 where shard"),
        "a JUnit case the summary lacks": (variant("stray", stray_case), "its test case 'z_net' is a model"),
        "a FIFO junit.xml": (variant("fifo", fifo), "junit.xml is not a regular file"),
        "a link to /dev/zero": (variant("zero", zero), "summary.json is not a regular file"),
        "a 2 GB summary.json": (variant("huge", huge), "summary.json is 2,048 MB, more than a shard's 256 MB"),
    }
    for attack, (folder, words) in attacks.items():
        first = "shard2" if attack == "other tool versions" else folder
        done = subprocess.run([sys.executable, "-m", "converter.merge", first, *([folder] if first != folder else []),
                               "--reports-dir", "merged"], capture_output=True, text=True, cwd=harness.path,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)  # a FIFO used to hang here
        assert done.returncode == 2, (attack, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and words in done.stderr, (attack, done.stderr)
    assert not (harness.path / "merged").exists()


def test_collect_only_after_a_run_leaves_its_junit_report(harness):
    (harness.path / "models").mkdir()
    (harness.path / "models" / "noshape.pt").write_bytes(b"")
    harness.runpytest_subprocess("-p", "no:cacheprovider", "--tflite-models-dir", "models").assert_outcomes(failed=1)
    junit = harness.path / "reports" / "junit.xml"  # where a run puts it unless told otherwise
    before = junit.read_bytes()
    listed = harness.runpytest_subprocess("-p", "no:cacheprovider", "--tflite-models-dir", "models", "--collect-only", "-q")
    assert listed.ret == 0 and "noshape" in listed.stdout.str()
    assert junit.read_bytes() == before
