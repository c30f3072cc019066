"""The HTML summary as a reviewer sees it: rendered by headless Chromium, it must fit a laptop
screen (1400 px) without horizontal scrolling. Runs where Chromium is installed (CI here), and
says why it skips where it is not."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from converter.html_report import render
from converter.report import build_summary
from converter.rows import Outcome, SummaryRow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LAPTOP = 1400


def realistic_rows() -> dict[str, dict]:
    """The widest rows the bundled examples produce, and then some."""
    rows = {}
    for i, (name, fixes) in enumerate([
        ("detection_namedtuple", "flatten_outputs:namedtuple -> scores, boxes"),
        ("nested_outputs", "flatten_outputs:nested -> output_0_0, output_0_1, output_1; pt2_legacy_trace"),
        ("convnext_block", "pseudo_ops:erf"),
        ("a_much_longer_model_name/in_a_subfolder/resnet50_finetuned_v2", None),
        ("diverging_pool", None),
    ]):
        failed = name == "diverging_pool"
        rows[name] = SummaryRow(
            outcome=Outcome.XFAILED if failed else Outcome.PASSED, status="failed" if failed else "passed",
            failure_stage="verify" if failed else None, failure_kind="numeric_mismatch" if failed else None,
            failure_message="float32 TFLite output 'output_0': range-relative max error 0.461 > tolerance "
                            "0.0001; first divergence at node node_masked_fill (Where)" if failed else None,
            exporter="dynamo" if i % 2 else "legacy", opset=17, onnx_bytes=46_700_000, tflite_bytes=11_800_000,
            tflite_fp32_bytes=46_600_000, size_ratio=0.2527, fp32_range_rel_err=2.9e-6, drq_range_rel_err=3.2e-2,
            drq_cosine=0.99871, convert_seconds=171.3, slowest_stage="savedmodel 113.4 s", peak_rss_mb=3612.4,
            fixes_applied=fixes,
            stage_seconds={"load": 3.0, "export": 7.4, "savedmodel": 113.4, "tflite": 7.9, "verify": 0.5},
        ).to_dict()
    return rows


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install "
                                             "chromium), so the page's width on a laptop screen is not checked")
def test_the_summary_page_fits_a_laptop_screen(tmp_path):
    summary = build_summary(realistic_rows(), {"torch": "2.13.0"}, {})
    summary["baseline"] = {"labels": {m: "DRQ error x3.1; size +12%" for m in summary["models"]},
                           "marks": {}, "lines": [{"severity": "note", "text": "note (all): conversions took 1 s"}]}
    # a probe, only in this copy: the report itself carries no script
    page = render(summary).replace(
        "</body>", "<script>document.body.setAttribute('data-width', document.documentElement.scrollWidth)"
                   "</script></body>")
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
