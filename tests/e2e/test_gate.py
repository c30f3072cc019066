"""The baseline gate in real batches: regressions, improvements, GONE models and bad thresholds."""
from __future__ import annotations

import json

import pytest

from .. import builders
from ..support import run


def test_regression_flow(harness):
    """The whole story under xdist, as CI runs it (the gate is the controller's, the same code in a
    plain run): no baseline, a baseline written, a partial rerun, regressions only the gate
    catches, the broken state accepted, then mended."""
    workers = ["-n", "2"]
    models = harness.path / "models"
    builders.torchscript_mlp(models, "mlp")
    builders.torchscript_mlp(models, "wide")
    builders.pickled_module(models, "leaving")  # refused at load: cheap, and baselined as xfailed
    with open(models / "leaving.toml", "a") as fh:
        fh.write('[expect]\nkind = "untrusted_pickle"\nreason = "not opted in"\n')
    builders.torchscript_mlp(models, "fails_later")
    args = [*workers, "--models-dir", "models"]

    first = run(harness, *args, "-k", "mlp")
    assert first.ret == 0
    first.stdout.fnmatch_lines(["*no baseline at *baseline.json*--baseline-update*"])

    update = run(harness, *args, "--baseline-update")
    assert update.ret == 0
    baseline = json.loads((harness.path / "tflite_baseline.json").read_text())
    assert sorted(baseline["models"]) == ["fails_later", "leaving", "mlp", "wide"] and baseline["versions"]["onnx2tf"]
    assert baseline["models"]["leaving"]["status"] == "xfailed"
    rerun = run(harness, *args, "-k", "mlp")  # models not run are neither judged nor GONE
    assert rerun.ret == 0 and "GONE" not in rerun.stdout.str() and "REGRESSION" not in rerun.stdout.str()
    rerun.stdout.fnmatch_lines(["*no regression against*"])

    builders.torchscript_mlp(models, "mlp", outlier=2.0)   # drifts (x5), but within its tolerance on every input
    builders.torchscript_mlp(models, "wide", hidden=128)  # a grown layer
    (models / "leaving.pt").unlink()
    (models / "fails_later.pt").unlink()  # now holds an op that no exporter supports
    builders.factory_model(models, "fails_later", builders.EIGH_SOURCE, "eighs:eigh", (1, 4, 4))
    builders.torchscript_mlp(models, "arrived")
    broken = run(harness, *args)
    assert broken.ret == 1
    broken.assert_outcomes(passed=3, failed=1)  # the drift and the growth pass every test ...
    broken.stdout.fnmatch_lines([               # ... and only the baseline gate catches them
        "*REGRESSION leaving: was in the baseline and has disappeared*",
        "*REGRESSION fails_later: passed before, now failed: export failed [[]export_error[]]: every exporter failed*",
        "*REGRESSION mlp: DRQ error grew x*",
        "*REGRESSION wide: DRQ file grew +*",
        "*note arrived: new model, not in the baseline yet*",
        "*regression(s) against*"])
    summary_md = (harness.path / "reports" / "summary.md").read_text()
    assert "vs baseline" in summary_md and "| PASS->FAILED (export_error) |" in summary_md
    # size and error charts for the 3 converted models; seconds by stage for all 4 (the failed one too)
    assert (harness.path / "reports" / "summary.html").read_text().count("<svg") == 3 * 2 + 4

    accept = run(harness, *args, "--baseline-update")  # accept the broken state (its failing test still fails) ...
    accept.stdout.fnmatch_lines(["*baseline written: *baseline.json (4 models)*"])
    builders.torchscript_mlp(models, "mlp")                    # ... then mend it
    builders.torchscript_mlp(models, "wide")
    builders.torchscript_mlp(models, "fails_later")
    mended = run(harness, *args)
    assert mended.ret == 0
    mended.stdout.fnmatch_lines(["*improved fails_later: failed before (export_error), now passes*",
                                 "*improved mlp: DRQ error shrank*", "*improved wide: DRQ file shrank*",
                                 "*update the baseline with --baseline-update*", "*no regression against*"])


def test_bad_threshold_is_a_usage_error(harness):
    result = run(harness, "--collect-only", "--regression-threshold", "size:10%")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--regression-threshold*bad regression threshold 'size:10%'*"])
