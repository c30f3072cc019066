"""The HTML summary as a reviewer sees it: rendered by headless Chromium, it must fit a laptop
screen (1400 px) without horizontal scrolling, and say what the browser shows: a regressed row
that is not green, bars drawn to scale, numbers on the charts, the device of each file. Runs
where Chromium is installed (CI here), and says why it skips where it is not."""
from __future__ import annotations

import dataclasses
import html
import json
import re
import shutil
import subprocess
import urllib.parse

import pytest

from converter.checks import MicroCheck, OutputComparison, RuntimeCheck
from converter.failures import Failure, FailureKind, Stage
from converter.html_report import render
from converter.recipes import RECIPES
from converter.results import Deliverable, ExportResult, Fix, Outcome, Result, TFLiteResult
from converter.settings import file_name
from converter.summaries import artifact_links

from ..support import write

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LAPTOP = 1400


def _outputs(err: float, tolerance: float = 0.05) -> tuple[OutputComparison, ...]:
    return (OutputComparison("output_0", (1, 1000), (1, 1000), err * 3, err, 3.0, err, 0.99871, 1.0, 0, 1000, tolerance),)


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
    # a DRQ file larger than its ONNX file (weights under 1024 elements stay float32, plus
    # quantization parameters), a DRQ miss delivered as float16, a Micro file, and a regression
    onnx = records["convnext_block"].export
    records["bigger_than_onnx"] = dataclasses.replace(
        records["convnext_block"], model_id="bigger_than_onnx", export=dataclasses.replace(onnx, onnx_bytes=20_000),
        deliverables=(Deliverable("drq", "model_drq.tflite", 47_400, _outputs(3.2e-2)),))
    records["drq_missed"] = dataclasses.replace(
        records["convnext_block"], model_id="drq_missed", requested=("drq", "fp16"), delivered="fp16",
        deliverables=(Deliverable("drq", "model_drq.tflite", 11_800_000, _outputs(8.3e-2)),
                      Deliverable("fp16", "model_fp16.tflite", 23_500_000, _outputs(4.2e-3, tolerance=1e-2))))
    micro = RuntimeCheck(True, kernels_agree=True, micro=MicroCheck(True, arena_bytes=14_672, agrees=True))
    records["int8_classifier"] = dataclasses.replace(
        records["convnext_block"], model_id="int8_classifier", requested=("int8_io",), delivered="int8_io",
        deliverables=(Deliverable("int8_io", "model_int8_io.tflite", 31_000, _outputs(4.7e-3, tolerance=0.1),
                                  runtime=micro),),
        tflite=TFLiteResult((), 0.3, "16 samples from samples (4 held out for verification)"))
    records["regressed_net"] = dataclasses.replace(records["convnext_block"], model_id="regressed_net")
    return records


def _probe(page: str, script: str) -> str:
    """The page with a script that writes what the browser computed into the body's attributes
    (only in this copy: the report itself carries no script)."""
    return page.replace("</body>", f"<script>{script}</script></body>")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install "
                                             "chromium), so the page's width on a laptop screen is not checked")
def test_the_summary_page_fits_a_laptop_screen(tmp_path):
    records = realistic_records()
    gate = {"labels": {m: "DRQ error x3.1; size +12%" for m in records},
            "marks": {"regressed_net": "regression"},
            "lines": [{"severity": "regression", "text": "REGRESSION regressed_net: DRQ error grew x3.1"}]
            + [{"severity": "note", "text": f"note m{i}: conversion took {i} s, 1 s in the baseline "
                                            "(reported, not gated)"} for i in range(40)]}
    for model_id in records:  # the artifacts a run leaves: each model's log and record
        for name in ("convert.log", "result.json"):
            write(tmp_path / "artifacts" / file_name(model_id) / name)
    page = render(records, {"torch": "2.13.0"}, gate, links=artifact_links(records, tmp_path))
    seen = _in_chromium(tmp_path, _probe(page, BROWSER_PROBE))
    assert seen["width"] <= LAPTOP, f"the page is {seen['width']} px wide: it scrolls sideways"
    # 40 timing notes are folded away: the table starts on the first screen, failures first
    assert seen["firstRow"] < 900, f"the table starts {seen['firstRow']:.0f} px down: notes fill the first screen"
    # a regressed model is not a green "passed" row, and the headline counts it
    assert seen["rows"]["regressed_net"]["background"] != seen["rows"]["convnext_block"]["background"]
    assert "regressed" in seen["rows"]["regressed_net"]["text"]
    assert "1 regressed against the baseline" in seen["text"]
    # a DRQ file at 237 % of its ONNX file is drawn larger than it, and says so
    bars = seen["rows"]["bigger_than_onnx"]["bars"]
    assert bars["DRQ"] > 2 * bars["ONNX"] and "237%" in seen["rows"]["bigger_than_onnx"]["text"]
    # each recipe against its own tolerance: the DRQ file that missed 0.05 says so in the chart
    assert "0.083 > 0.05" in seen["rows"]["drq_missed"]["text"] and "0.0042" in seen["rows"]["drq_missed"]["text"]
    # the device each file is for, the Micro arena, and whether int8 saw real samples
    micro = seen["rows"]["int8_classifier"]["text"]
    assert RECIPES["int8_io"].device in micro and "14.7 kB" in micro and "your samples" in micro
    assert RECIPES["drq"].device in seen["rows"]["convnext_block"]["text"]
    assert page.index("<h2>Failures</h2>") < page.index("<h2>Baseline</h2>") < page.index("<table>")
    assert "<details><summary>40 note(s), not gated</summary>" in page
    # words wrap between words (never inside one), and every model links to its log and result
    assert "anywhere" not in page and "break-all" not in page
    for model_id in records:
        folder = urllib.parse.quote(file_name(model_id))
        assert f'href="artifacts/{folder}/convert.log"' in page and f'href="artifacts/{folder}/result.json"' in page


# what the browser computed: the page's width, where the table starts, and per row its background,
# its visible text and the drawn width of each size bar (by the file its title names)
BROWSER_PROBE = """
const rows = {};
for (const tr of document.querySelector('tbody').querySelectorAll('tr')) {
  const bars = {};
  for (const rect of tr.querySelectorAll('svg[aria-label^="size"] rect')) {
    bars[rect.querySelector('title').textContent.split(' ')[0]] = rect.getBoundingClientRect().width;
  }
  rows[tr.querySelector('code').textContent] = {background: getComputedStyle(tr).backgroundColor,
                                                text: tr.innerText, bars: bars};
}
document.body.setAttribute('data-seen', JSON.stringify({
  width: document.documentElement.scrollWidth, text: document.body.innerText, rows: rows,
  firstRow: document.querySelector('tbody tr').getBoundingClientRect().top}));
"""


def _in_chromium(tmp_path, page: str) -> dict:
    path = tmp_path / "summary.html"
    path.write_text(page)
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                           "--no-first-run", "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={LAPTOP},900",
                           "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"data-seen=\"([^\"]*)\"", proc.stdout)
    assert found, proc.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))
