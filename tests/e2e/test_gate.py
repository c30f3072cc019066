"""The baseline gate in real batches: regressions, improvements, GONE models and bad thresholds."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from converter.html_report import OUTCOME_COLOURS

from .. import builders
from ..support import run


def test_regression_flow(harness):
    """The whole story (the gate is the controller's, the same code in a plain run and under xdist):
    no baseline, a baseline written, a partial rerun that keeps the full run's rows, regressions only
    the gate catches (under xdist, as CI runs it: failed test cases in JUnit and on the terminal's last
    line), the broken state accepted (its known failure declared, so the job is green), then mended.
    The other steps run plain: each xdist run pays its workers' start again."""
    models = harness.path / "models"
    builders.torchscript_mlp(models, "mlp")
    builders.torchscript_mlp(models, "wide")
    builders.pickled_module(models, "leaving")  # refused at load: cheap, and baselined as xfailed
    with open(models / "leaving.toml", "a") as fh:
        fh.write('[expect]\nkind = "untrusted_pickle"\nreason = "not opted in"\n')
    builders.torchscript_mlp(models, "fails_later")
    args = ["--tflite-models-dir", "models"]

    first = run(harness, *args, "-k", "mlp")
    assert first.ret == 0
    first.stdout.fnmatch_lines(["*no baseline at *baseline.json*--tflite-baseline-update*"])

    update = run(harness, *args, "--tflite-baseline-update")
    assert update.ret == 0
    baseline = json.loads((harness.path / "tflite_baseline.json").read_text())
    assert sorted(baseline["models"]) == ["fails_later", "leaving", "mlp", "wide"] and baseline["versions"]["onnx2tf"]
    assert baseline["models"]["leaving"]["status"] == "xfailed"
    rerun = run(harness, *args, "-k", "mlp")  # models not run are neither judged nor GONE
    assert rerun.ret == 0 and "GONE" not in rerun.stdout.str() and "REGRESSION" not in rerun.stdout.str()
    rerun.stdout.fnmatch_lines(["*1 row from this run, 3 kept from earlier runs*", "*no regression against*"])
    # ... and the full run's report keeps its other rows, each saying which run it comes from
    summary = json.loads((harness.path / "reports" / "summary.json").read_text())
    assert sorted(summary["models"]) == ["fails_later", "leaving", "mlp", "wide"]
    assert sorted(summary["kept_from_earlier_runs"]) == ["fails_later", "leaving", "wide"]
    assert summary["run"]["partial"] and summary["run"]["started"] not in summary["kept_from_earlier_runs"].values()
    assert "3 rows are kept from earlier runs" in (harness.path / "reports" / "summary.md").read_text()

    builders.torchscript_mlp(models, "mlp", outlier=2.0)   # drifts (x5), but within its tolerance on every input
    builders.torchscript_mlp(models, "wide", hidden=128)  # a grown layer
    (models / "leaving.pt").unlink()
    (models / "fails_later.pt").unlink()  # now holds an op that no exporter supports
    builders.factory_model(models, "fails_later", builders.EIGH_SOURCE, "eighs:eigh", (1, 4, 4))
    builders.torchscript_mlp(models, "arrived")
    broken = run(harness, *args, "-n", "2")
    assert broken.ret == 1
    broken.stdout.fnmatch_lines([               # the drift and the growth pass every test: only the gate catches them
        "*REGRESSION leaving: was in the baseline and has disappeared*",
        "*REGRESSION fails_later: passed before, now failed: export failed [[]export_error[]]: every exporter failed*",
        "*REGRESSION mlp: DRQ error grew x*",
        "*REGRESSION wide: DRQ file grew +*",
        "*note arrived: new model, not in the baseline yet*",
        "*regression(s) against*"])
    # ... and each is a failed test, as CI's JUnit widgets and the terminal's last line see it
    # each told once, in its FAILURES entry (the short summary names them)
    broken.stdout.fnmatch_lines(["FAILED models/fails_later.pt::fails_later", "FAILED tflite_baseline.json::leaving",
                                 "FAILED models/mlp.pt::mlp", "FAILED models/wide.pt::wide"])
    assert broken.stdout.str().count("REGRESSION mlp: DRQ error grew x") == 2  # its FAILURES entry, the gate's section
    broken.assert_outcomes(passed=3, failed=4)  # fails_later's own test, and the gate's three
    suite = ET.parse(harness.path / "junit.xml").getroot().find("testsuite")
    assert suite.get("failures") == "4"
    failed = {(c.get("classname"), c.get("name")): c.find("failure").get("message")
              for c in suite.iter("testcase") if c.find("failure") is not None}
    assert failed[("tflite_baseline.json", "leaving")] == "REGRESSION leaving: was in the baseline and has disappeared"
    assert failed[("models.mlp.pt", "mlp")].startswith("REGRESSION mlp: DRQ error grew x")
    assert "REGRESSION wide: DRQ file grew +" in failed[("models.wide.pt", "wide")]  # every line of the model
    assert "export_error" in failed[("models.fails_later.pt", "fails_later")]  # its own test's failure, once
    summary_md = (harness.path / "reports" / "summary.md").read_text()
    assert "vs baseline" in summary_md and "| PASS->FAILED (export_error) |" in summary_md
    # size and error charts for the 3 converted models; seconds by stage for all 4 (the failed one too)
    page = (harness.path / "reports" / "summary.html").read_text()
    assert page.count("<svg") == 3 * 2 + 4
    # the page reads the gate's verdict: the models that regressed are no green "passed" rows, and counted
    rows = {re.search(r"<code>(.*?)</code>", tr).group(1).replace("<wbr>", ""): tr
            for tr in re.findall(r"<tr style=.*?</tr>", page, re.S)}
    for model_id in ("mlp", "wide"):
        assert OUTCOME_COLOURS["passed"] not in rows[model_id] and "<td>passed</td>" not in rows[model_id], model_id
    assert OUTCOME_COLOURS["passed"] in rows["arrived"]  # new: nothing to regress against
    assert "4 regressed against the baseline" in page  # leaving (gone), fails_later, mlp, wide

    with open(models / "fails_later.toml", "a") as fh:  # a known failure is declared, so the job is green ...
        fh.write('[expect]\nkind = "export_error"\nreason = "eigh has no ONNX export"\n')
    accept = run(harness, *args, "--tflite-baseline-update")  # ... and the broken state accepted
    assert accept.ret == 0
    accept.assert_outcomes(passed=3, xfailed=1)
    accept.stdout.fnmatch_lines(["*baseline written: *baseline.json (4 models)*"])
    builders.torchscript_mlp(models, "mlp")                    # ... then mend it
    builders.torchscript_mlp(models, "wide")
    builders.torchscript_mlp(models, "fails_later")  # its sidecar rewritten: no [expect] left
    mended = run(harness, *args)
    assert mended.ret == 0
    mended.stdout.fnmatch_lines(["*improved fails_later: xfailed before (export_error), now passes*",
                                 "*improved mlp: DRQ error shrank*", "*improved wide: DRQ file shrank*",
                                 "*update the baseline with --tflite-baseline-update*", "*no regression against*"])


def test_bad_threshold_is_a_usage_error(harness):
    result = run(harness, "--collect-only", "--tflite-regression-threshold", "size:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tflite-regression-threshold*bad regression threshold 'size:10%'*"])
