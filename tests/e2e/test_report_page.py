"""The HTML summary as a reviewer sees it: rendered by headless Chromium, it must fit a laptop
screen (1400 px) without horizontal scrolling. Runs where Chromium is installed (CI here), and
says why it skips where it is not."""
from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse

import pytest

from converter.failures import Failure, FailureKind, Stage
from converter.html_report import render
from converter.results import Deliverable, ExportResult, Fix, Outcome, OutputComparison, Result
from converter.settings import file_name

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LAPTOP = 1400


def _outputs(err: float) -> tuple[OutputComparison, ...]:
    return (OutputComparison("output_0", (1, 1000), (1, 1000), err * 3, err, 3.0, err, 0.99871, 1.0, 0, 1000, 0.05),)


def realistic_records() -> dict[str, Result]:
    """The widest rows the bundled examples produce, and then some."""
    records = {}
    for i, (name, fixes) in enumerate([
        ("detection_namedtuple", [("flatten_outputs", "namedtuple -> scores, boxes")]),
        ("nested_outputs", [("flatten_outputs", "nested -> output_0_0, output_0_1, output_1"), ("pt2_legacy_trace", "")]),
        ("convnext_block", [("pseudo_ops", "erf")]),
        ("a_much_longer_model_name/in_a_subfolder/resnet50_finetuned_v2", []),
        ("diverging_pool", []),
    ]):
        failed = name == "diverging_pool"
        failure = Failure(FailureKind.NUMERIC_MISMATCH, Stage.VERIFY,
                          "TF model (onnx2tf) output 'output_0': range-relative max error 0.461 > tolerance "
                          "0.0001; first divergence at node node_masked_fill (Where)") if failed else None
        export = ExportResult("dynamo" if i % 2 else "legacy", 17, "model.onnx", 46_700_000, ((1, 3, 224, 224),), (),
                              _outputs(1e-7), 7.4)
        records[name] = Result(
            model_id=name, model_path=f"{name}.pt", status="failed" if failed else "passed", failure=failure,
            outcome=Outcome.XFAILED if failed else Outcome.PASSED, export=export,
            deliverables=(Deliverable("drq", "model_drq.tflite", 11_800_000, _outputs(3.2e-2)),),
            requested=("drq",), delivered=None if failed else "drq",
            fixes=tuple(Fix(n, d, "why") for n, d in fixes), seconds=171.3, peak_rss_mb=3612.4,
            stage_seconds={"load": 3.0, "export": 7.4, "savedmodel": 113.4, "tflite": 7.9, "verify": 0.5})
    return records


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install "
                                             "chromium), so the page's width on a laptop screen is not checked")
def test_the_summary_page_fits_a_laptop_screen(tmp_path):
    records = realistic_records()
    gate = {"labels": {m: "DRQ error x3.1; size +12%" for m in records},
            "marks": {}, "lines": [{"severity": "note", "text": f"note m{i}: conversion took {i} s, 1 s in the baseline "
                                                                "(reported, not gated)"} for i in range(40)]}
    # a probe, only in this copy: the report itself carries no script
    page = render(records, {"torch": "2.13.0"}, gate).replace(
        "</body>", "<script>document.body.setAttribute('data-width', document.documentElement.scrollWidth);"
                   "document.body.setAttribute('data-first-row', document.querySelector('tbody tr')"
                   ".getBoundingClientRect().top)</script></body>")
    path = tmp_path / "summary.html"
    path.write_text(page)
    profile = tmp_path / "profile"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={profile}", f"--window-size={LAPTOP},900",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-width="(\d+)"', proc.stdout)
    assert found, proc.stderr[-2000:]
    assert int(found.group(1)) <= LAPTOP, f"the page is {found.group(1)} px wide: it scrolls sideways"
    # 40 timing notes are folded away: the table starts on the first screen, failures first
    first_row = float(re.search(r'data-first-row="([\d.]+)"', proc.stdout).group(1))
    assert first_row < 900, f"the table starts {first_row:.0f} px down: notes fill the first screen"
    assert page.index("<h2>Failures</h2>") < page.index("<h2>Baseline</h2>") < page.index("<table>")
    assert "<details><summary>40 note(s), not gated</summary>" in page
    # words wrap between words (never inside one), and every model links to its log and result
    assert "anywhere" not in page and "break-all" not in page
    for model_id in records:
        folder = urllib.parse.quote(file_name(model_id))
        assert f'href="artifacts/{folder}/convert.log"' in page and f'href="artifacts/{folder}/result.json"' in page
